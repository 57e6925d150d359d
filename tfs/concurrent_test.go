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
