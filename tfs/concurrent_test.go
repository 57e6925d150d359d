package tfs

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Several writers, readers and syncs at once, with a short write-back
// delay so the flusher runs too; run under -race. Each goroutine owns a
// directory; contents are checked live and after a remount.
func TestConcurrentOperations(t *testing.T) {
	dev := newVolume(t, 128<<20, "conc")
	q := testQueue(t)
	fs := mountMem(t, dev, Options{Queue: q, WritebackDelay: 20 * time.Millisecond})
	const workers, files = 4, 30
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			err := func() error {
				dir, err := fs.Mkdir(fs.Root(), fmt.Sprintf("w%d", w))
				if err != nil {
					return err
				}
				for i := 0; i < files; i++ {
					f, err := fs.Create(dir, fmt.Sprintf("f%d", i), true)
					if err != nil {
						return err
					}
					data := pattern(int64(w*1000+i), 1000*(i+1))
					for off := 0; off < len(data); off += 777 {
						if _, err := fs.Write(f, data[off:min(off+777, len(data))], int64(off)); err != nil {
							return err
						}
					}
					got := make([]byte, len(data))
					if k, err := fs.Read(f, got, 0); err != nil || k != len(data) || !bytes.Equal(got, data) {
						return fmt.Errorf("w%d/f%d: read back %d bytes, %v", w, i, k, err)
					}
					if i%7 == 0 {
						if err := fs.Fsync(f, false); err != nil {
							return err
						}
					}
					if i%5 == 0 {
						if err := fs.Rename(dir, fmt.Sprintf("f%d", i), dir, fmt.Sprintf("r%d", i), 0); err != nil {
							return err
						}
					}
				}
				return nil
			}()
			if err != nil {
				errs <- err
			}
		}(w)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 10; i++ {
			_ = fs.Sync()
			_ = fs.StatFS()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkInvariants(t, fs)
	before := snapshot(t, fs)
	must(t, fs.Close())
	fs = mountMem(t, dev, Options{Queue: q})
	defer fs.Close()
	if after := snapshot(t, fs); after != before {
		t.Fatalf("tree differs after remount")
	}
}

// Two writes past the end of file at once, as the kernel's write-back
// sends them with writeback_cache: one covers the old end, the other
// starts beyond it and so zeroes the stale tail of the old last block.
// The zeroing must not land on the bytes the first write put there.
func TestConcurrentExtendingWrites(t *testing.T) {
	dev := newVolume(t, 32<<20, "")
	fs := mountMem(t, dev, Options{})
	defer fs.Close()
	f := mk(t)(fs.Create(fs.Root(), "f", true))
	fs.Open(f)
	defer fs.Release(f)
	for i := 0; i < 300; i++ {
		// A file whose last block is allocated and holds bytes beyond
		// EOF: written, synced, then cut in the middle of a block.
		must(t, fs.Truncate(f, 0))
		writeAll(t, fs, f, pattern(int64(i), 64<<10), 0)
		must(t, fs.Fsync(f, true))
		const end = 20000 // not a multiple of the 512-byte block
		must(t, fs.Truncate(f, end))
		a := pattern(int64(i)+1000, 3000) // covers the old end
		b := pattern(int64(i)+2000, 100)  // starts past it
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := fs.Write(f, a, end-1000); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := fs.Write(f, b, end+5000); err != nil {
				t.Error(err)
			}
		}()
		wg.Wait()
		got := make([]byte, len(a))
		if _, err := fs.Read(f, got, end-1000); err != nil {
			t.Fatal(err)
		}
		if k := firstDiff(got, a); k >= 0 {
			t.Fatalf("round %d: byte %d of the write over the old end reads %#x, want %#x", i, end-1000+k, got[k], a[k])
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}
