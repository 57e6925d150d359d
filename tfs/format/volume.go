package format

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/tfsmount/tfsmount/blockdev"
)

// Volume discovery (docs/format.md, "Finding the volume"): a raw volume
// starts with the magic at byte 0; otherwise sector 0 must be an MBR whose
// root (or boot) entry locates the volume.

const Magic = "NVMTFS"

// VolumeLocation is where a TFS volume sits inside a device.
type VolumeLocation struct {
	Off, Size int64
	What      string // "raw volume", "root partition (entry 1)", ...
}

func LocateVolume(dev blockdev.Device, partition string) (VolumeLocation, error) {
	size := dev.Size()
	if partition != "" && partition != "root" && partition != "boot" {
		off, err := strconv.ParseInt(partition, 10, 64)
		if err != nil || off < 0 || off%512 != 0 || off >= size {
			return VolumeLocation{}, fmt.Errorf("partition %q: want root, boot or a byte offset that is a multiple of 512 inside the %d-byte device", partition, size)
		}
		return VolumeLocation{Off: off, Size: size - off, What: fmt.Sprintf("volume at byte offset %d", off)}, nil
	}
	if size < 512 {
		return VolumeLocation{}, fmt.Errorf("device of %d bytes is too small to hold a TFS volume", size)
	}
	sec := make([]byte, 512)
	if err := blockdev.ReadAt(dev, sec, 0); err != nil {
		return VolumeLocation{}, fmt.Errorf("read sector 0: %w", err)
	}
	raw := string(sec[:len(Magic)]) == Magic
	if raw && partition != "boot" {
		return VolumeLocation{Off: 0, Size: size, What: "raw volume"}, nil
	}
	if sec[510] != 0x55 || sec[511] != 0xAA {
		if raw {
			return VolumeLocation{}, fmt.Errorf("boot volume requested, but the device is a raw TFS volume without a partition table")
		}
		return VolumeLocation{}, fmt.Errorf("sector 0 is neither a TFS volume (no %q magic, found % x) nor an MBR (no 55 AA signature, found % x)", Magic, sec[:6], sec[510:512])
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
		return VolumeLocation{}, fmt.Errorf("MBR: %s partition entry %d is empty (start %d, %d sectors)", name, idx, lba, n)
	}
	off := int64(lba) * 512
	if off >= size {
		return VolumeLocation{}, fmt.Errorf("MBR: %s partition entry %d starts at byte %d, past the end of the %d-byte device: %w", name, idx, off, size, ErrCorrupt)
	}
	vsize := size - off // the kernel ignores the root entry's sector count
	if partition == "boot" {
		vsize = min(int64(n)*512, size-off)
	}
	return VolumeLocation{Off: off, Size: vsize, What: fmt.Sprintf("%s partition (MBR entry %d at byte %d)", name, idx, off)}, nil
}

// VolumeDevice is the volume as a device of its own (the whole device for a
// raw volume at 0, else a blockdev.Slice; loc lies inside dev).
func VolumeDevice(dev blockdev.Device, loc VolumeLocation) blockdev.Device {
	if loc.Off == 0 && loc.Size == dev.Size() {
		return dev
	}
	return blockdev.NewSlice(dev, loc.Off, loc.Size)
}
