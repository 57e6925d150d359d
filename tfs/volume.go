package tfs

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/tfsmount/tfsmount/blockdev"
)

// Volume discovery (tfs-format.md §1.4): a raw volume starts with the magic
// at byte 0; otherwise sector 0 must be an MBR whose root (or boot) entry
// locates the volume.

const magic = "NVMTFS"

// volumeLocation is where a TFS volume sits inside a device.
type volumeLocation struct {
	off, size int64
	what      string // "raw volume", "root partition (entry 1)", ...
}

func locateVolume(dev blockdev.Device, partition string) (volumeLocation, error) {
	size := dev.Size()
	if partition != "" && partition != "root" && partition != "boot" {
		off, err := strconv.ParseInt(partition, 10, 64)
		if err != nil || off < 0 || off%512 != 0 || off >= size {
			return volumeLocation{}, fmt.Errorf("partition %q: want root, boot or a byte offset that is a multiple of 512 inside the %d-byte device", partition, size)
		}
		return volumeLocation{off: off, size: size - off, what: fmt.Sprintf("volume at byte offset %d", off)}, nil
	}
	if size < 512 {
		return volumeLocation{}, fmt.Errorf("device of %d bytes is too small to hold a TFS volume", size)
	}
	sec := make([]byte, 512)
	if err := blockdev.ReadAt(dev, sec, 0); err != nil {
		return volumeLocation{}, fmt.Errorf("read sector 0: %w", err)
	}
	raw := string(sec[:len(magic)]) == magic
	if raw && partition != "boot" {
		return volumeLocation{off: 0, size: size, what: "raw volume"}, nil
	}
	if sec[510] != 0x55 || sec[511] != 0xAA {
		if raw {
			return volumeLocation{}, fmt.Errorf("boot volume requested, but the device is a raw TFS volume without a partition table")
		}
		return volumeLocation{}, fmt.Errorf("sector 0 is neither a TFS volume (no %q magic, found % x) nor an MBR (no 55 AA signature, found % x)", magic, sec[:6], sec[510:512])
	}
	entry := func(i int) (typ byte, lba, n uint32) {
		e := sec[446+16*i:]
		return e[4], binary.LittleEndian.Uint32(e[8:]), binary.LittleEndian.Uint32(e[12:])
	}
	t0, _, _ := entry(0)
	rootIdx, bootIdx := 1, 0
	if t0 == 0xEF {
		rootIdx, bootIdx = 2, 1
	}
	idx := rootIdx
	name := "root"
	if partition == "boot" {
		idx, name = bootIdx, "boot"
	}
	_, lba, n := entry(idx)
	if lba == 0 || n == 0 {
		return volumeLocation{}, fmt.Errorf("MBR: %s partition entry %d is empty (start %d, %d sectors)", name, idx, lba, n)
	}
	off := int64(lba) * 512
	if off >= size {
		return volumeLocation{}, fmt.Errorf("MBR: %s partition entry %d starts at byte %d, past the end of the %d-byte device", name, idx, off, size)
	}
	vsize := size - off // the kernel ignores the root entry's sector count
	if partition == "boot" {
		vsize = min(int64(n)*512, size-off)
	}
	return volumeLocation{off: off, size: vsize, what: fmt.Sprintf("%s partition (MBR entry %d at byte %d)", name, idx, off)}, nil
}

// slice presents [off, off+size) of a device as a device of its own.
// blockdev may grow an exported equivalent; this one is enough for tfs.
type slice struct {
	dev       blockdev.Device
	off, size int64
}

func newSlice(dev blockdev.Device, off, size int64) blockdev.Device {
	if off == 0 && size == dev.Size() {
		return dev
	}
	return &slice{dev: dev, off: off, size: size}
}

func (s *slice) Submit(r *blockdev.Request) {
	if err := blockdev.Check(r, s.size, s.dev.ReadOnly()); err != nil {
		done := r.Done
		// Completions must not run inline: ride a flush of the underlying
		// device to reach the bhqueue, and report the range error.
		s.dev.Submit(&blockdev.Request{Op: blockdev.OpFlush, Done: func(int64, error) { done(0, err) }})
		return
	}
	r2 := *r
	r2.Off += s.off
	s.dev.Submit(&r2)
}

func (s *slice) Size() int64     { return s.size }
func (s *slice) SectorSize() int { return s.dev.SectorSize() }
func (s *slice) ReadOnly() bool  { return s.dev.ReadOnly() }
func (s *slice) Close() error    { return nil }
