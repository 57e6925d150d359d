package tfs

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// Torn log tails: what a crash of a writer that does not order its log
// writes (Nanos itself, or tfsmount before the ordering rules) can leave,
// and how replay, fsck and fsck --repair treat it.

// tornFixture is a volume with a few files, closed, and where its log
// ends: the byte offset of the END_OF_LOG on the device.
func tornFixture(t *testing.T) (img []byte, eol int64, want map[string][]byte) {
	q := testQueue(t)
	dev := newVolume(t, 4<<20, "torn")
	fs := mountMem(t, dev, Options{Queue: q})
	want = map[string][]byte{}
	for i := 0; i < 5; i++ {
		name := fmt.Sprintf("f%d", i)
		f := mk(t)(fs.Create(fs.Root(), name, true))
		want["/"+name] = pattern(int64(i), 3000+i*1000)
		writeAll(t, fs, f, want["/"+name], 0)
	}
	must(t, fs.Close())
	img = dev.Bytes()
	l, _, err := format.ReadLog(blockdev.NewMemoryFrom(q, img, true), uint64(len(img)/format.BlockSize), false)
	must(t, err)
	eol = int64(l.Last().Start)*format.BlockSize + int64(l.EndPos)
	if eol%format.BlockSize > format.BlockSize-40 {
		t.Fatalf("END_OF_LOG at %d is too close to a block end for these tests", eol)
	}
	return img, eol, want
}

// cutShort writes over the END_OF_LOG at eol a record of a block's worth
// of bytes, of which only those up to the end of the blocks-th block from
// eol's are there (non-zero); the rest are as they were.
func cutShort(img []byte, eol int64, blocks int64) {
	n := uint64(format.BlockSize)
	b := format.PutVarint(format.PutVarint([]byte{format.RecEndOfSegment, format.RecAvailable}, n), n)
	copy(img[eol:], b)
	for i := eol + int64(len(b)); i < (eol/format.BlockSize+blocks)*format.BlockSize; i++ {
		img[i] = 0x91
	}
}

func checkFiles(t *testing.T, fs *FS, want map[string][]byte) {
	t.Helper()
	for p, b := range want {
		checkContent(t, fs, p, b)
	}
}

func TestTornTails(t *testing.T) {
	q := testQueue(t)
	cases := []struct {
		name string
		// tear writes the torn tail over the log's END_OF_LOG at eol.
		tear func(img []byte, eol int64)
		// provable: mounts as it is; otherwise only fsck --repair helps.
		provable bool
		why      string
	}{
		{"link to an extension never written", func(img []byte, eol int64) {
			// A free area far from the log, all zeros.
			copy(img[eol:], append(format.PutVarint(format.PutVarint([]byte{format.RecLink}, 6000), format.ExtBlocks), format.RecEndOfLog))
		}, true, "link to an extension that was never written"},
		{"record cut short by unwritten blocks", func(img []byte, eol int64) {
			// The next block, where the record goes on, is still zeros.
			cutShort(img, eol, 1)
		}, true, "record cut short"},
		{"record cut short, stale bytes after", func(img []byte, eol int64) {
			cutShort(img, eol, 3)
		}, false, "unreadable"},
		{"unknown record after stale data", func(img []byte, eol int64) {
			img[eol] = 0x7e
			img[(eol/format.BlockSize+2)*format.BlockSize] = 0x33
		}, false, "unreadable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img, eol, want := tornFixture(t)
			c.tear(img, eol)
			_, err := Mount(blockdev.NewMemoryFrom(q, img, true), Options{Queue: q})
			if !c.provable {
				if err == nil || !strings.Contains(err.Error(), "log extension at block") {
					t.Fatalf("mount of a damaged log that is not a torn tail: %v", err)
				}
				rep, err := Fsck(blockdev.NewMemoryFrom(q, img, true), Options{})
				if err != nil || rep.Clean() || !strings.Contains(rep.String(), "fsck --repair") {
					t.Fatalf("fsck: %v %v", rep, err)
				}
			} else {
				if err != nil {
					t.Fatalf("read-only mount of a torn tail: %v", err)
				}
				rep, err := Fsck(blockdev.NewMemoryFrom(q, img, true), Options{})
				if err != nil || rep.Clean() || !strings.Contains(rep.String(), c.why) {
					t.Fatalf("fsck: %v %v; want the torn tail (%q) reported", rep, err, c.why)
				}
				// A writable mount ends the log on the device at once.
				dev := blockdev.NewMemoryFrom(q, img, false)
				fs := mountMem(t, dev, Options{Queue: q})
				checkFiles(t, fs, want)
				must(t, fs.Close())
				rep, err = Fsck(blockdev.NewMemoryFrom(q, dev.Bytes(), true), Options{})
				if err != nil || !rep.Clean() {
					t.Fatalf("fsck after a writable mount: %v %v", rep, err)
				}
			}
			// fsck --repair: ends the log, then everything is clean and
			// every file written before the tear is there.
			dev := blockdev.NewMemoryFrom(q, img, false)
			changes, rep, err := Repair(dev, Options{Queue: q})
			if err != nil || !rep.Clean() || len(changes) == 0 || !strings.Contains(changes[0], c.why) {
				t.Fatalf("repair: %v, changes %q, then %v", err, changes, rep)
			}
			fs := mountMem(t, dev, Options{Queue: q})
			checkFiles(t, fs, want)
			checkInvariants(t, fs)
			must(t, fs.Close())
			// A second repair finds nothing to do.
			changes, rep, err = Repair(dev, Options{Queue: q})
			if err != nil || !rep.Clean() || len(changes) != 0 {
				t.Fatalf("second repair: %v, changes %q, then %v", err, changes, rep)
			}
		})
	}
}

// TestUnreadableExtension: a read error in the log is no torn tail. Mount
// and fsck report it, and fsck --repair ends the log at the link to the
// unreadable extension (here that leaves no root, so it says it cannot
// repair) rather than failing in any other way.
func TestUnreadableExtension(t *testing.T) {
	q := testQueue(t)
	img, _, _ := tornFixture(t)
	dev := blockdev.NewFaulty(blockdev.NewMemoryFrom(q, img, false), q)
	dev.FailRange(format.BlockSize, format.ExtBlocks*format.BlockSize, errors.New("injected read error"), blockdev.OpRead)
	if _, err := Mount(dev, Options{Queue: q, ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "injected read error") {
		t.Fatalf("mount: %v", err)
	}
	_, _, err := Repair(dev, Options{Queue: q})
	if err == nil || !strings.Contains(err.Error(), "cannot repair") || !strings.Contains(err.Error(), "injected read error") {
		t.Fatalf("repair: %v", err)
	}
}
