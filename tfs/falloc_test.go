package tfs

import (
	"bytes"
	"testing"

	"github.com/tfsmount/tfsmount/tfs/format"
)

// FALLOC_FL_ZERO_RANGE: the range reads as zeros and is allocated, the
// bytes around it keep their data, the size grows only without KEEP_SIZE,
// and all of it survives a remount with a clean fsck.
func TestZeroRange(t *testing.T) {
	dev := newVolume(t, 16<<20, "")
	fs := mountMem(t, dev, Options{})
	root := fs.Root()
	type step struct {
		mode      uint32
		off, len  int64
		wantSize  int64
		allocated bool // every block of the range ends up allocated
	}
	cases := []struct {
		name  string
		data  []byte
		fsync bool
		steps []step
	}{
		{"inside, unaligned", pattern(1, 200000), true, []step{{FallocZeroRange, 1000, 70000, 200000, true}}},
		{"inside a block", pattern(2, 5000), false, []step{{FallocZeroRange, 100, 200, 5000, true}}},
		{"aligned, in the cache only", pattern(3, 100000), false, []step{{FallocZeroRange, 8192, 16384, 100000, true}}},
		{"across the end", pattern(4, 30000), true, []step{{FallocZeroRange, 20000, 30000, 50000, true}}},
		{"past the end, keep size", pattern(5, 30000), true, []step{{FallocZeroRange | FallocKeepSize, 20000, 30000, 30000, true}}},
		{"hole of a sparse file", nil, false, []step{{FallocKeepSize, 0, 1, 0, false}, {FallocZeroRange, 4096, 8192, 12288, true}}},
	}
	want := map[string][]byte{}
	for i, c := range cases {
		name := string(rune('a' + i))
		f := mk(t)(fs.Create(root, name, true))
		w := append([]byte(nil), c.data...)
		if len(w) > 0 {
			writeAll(t, fs, f, w, 0)
		}
		if c.fsync {
			must(t, fs.Fsync(f, false))
		}
		for _, s := range c.steps {
			must(t, fs.Fallocate(f, s.mode, s.off, s.len))
			if s.mode&FallocZeroRange != 0 {
				end := s.off + s.len
				if s.mode&FallocKeepSize != 0 {
					end = min(end, int64(len(w)))
				}
				for int64(len(w)) < end {
					w = append(w, 0)
				}
				clear(w[s.off:end])
			}
			a := fs.Getattr(f)
			if a.Size != s.wantSize {
				t.Errorf("%s: size %d after mode %#x, want %d", c.name, a.Size, s.mode, s.wantSize)
			}
			if s.allocated {
				fs.mu.Lock()
				for b := uint64(s.off) / format.BlockSize; b < uint64(s.off+s.len+format.BlockSize-1)/format.BlockSize; b++ {
					if f.extentAt(b) == nil {
						t.Errorf("%s: block %d of the zeroed range has no extent", c.name, b)
						break
					}
				}
				fs.mu.Unlock()
			}
		}
		if got := readAll(t, fs, f); !bytes.Equal(got, w) {
			t.Errorf("%s: content differs after zero range", c.name)
		}
		want["/"+name] = w
	}
	must(t, fs.Close())
	fs = mountMem(t, dev, Options{ReadOnly: true})
	defer fs.Close()
	for p, w := range want {
		checkContent(t, fs, p, w)
	}
	rep, err := Fsck(dev, Options{ReadOnly: true, Queue: testQueue(t)})
	must(t, err)
	if !rep.Clean() {
		t.Errorf("fsck: %v", rep)
	}
}
