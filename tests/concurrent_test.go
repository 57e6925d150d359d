package tests

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// TestConcurrentReadersWriters runs writers on separate files (64 KiB
// blocks in random order) while readers verify a file written before: the
// data path has no global lock, so this is where page and extent
// bookkeeping of different files meet.
func TestConcurrentReadersWriters(t *testing.T) {
	m := freshMount(t, "256M")
	const size, block = 16 << 20, 64 << 10
	shared := randBytes(100, size)
	mustWriteFile(t, m.Path("shared"), shared)
	m = m.remount() // readers start cold
	want := make([][]byte, 4)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	stop := make(chan struct{})
	for w := range want {
		want[w] = randBytes(int64(200+w), size)
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			f, err := os.Create(m.Path(fmt.Sprintf("w%d", w)))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			for _, b := range rand.New(rand.NewSource(int64(w))).Perm(size / block) {
				if _, err := f.WriteAt(want[w][b*block:(b+1)*block], int64(b*block)); err != nil {
					errs <- fmt.Errorf("writer %d block %d: %w", w, b, err)
					return
				}
			}
		}(w)
	}
	var rg sync.WaitGroup
	for r := 0; r < 2; r++ {
		rg.Add(1)
		go func(r int) {
			defer rg.Done()
			rnd := rand.New(rand.NewSource(int64(50 + r)))
			f, err := os.Open(m.Path("shared"))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			buf := make([]byte, 3*block)
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Drop the kernel's cached pages so reads reach tfsmount.
				unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
				off := rnd.Int63n(size - int64(len(buf)))
				if _, err := f.ReadAt(buf, off); err != nil {
					errs <- fmt.Errorf("reader %d at %d: %w", r, off, err)
					return
				}
				if !bytes.Equal(buf, shared[off:off+int64(len(buf))]) {
					errs <- fmt.Errorf("reader %d at %d: wrong data while writers run", r, off)
					return
				}
			}
		}(r)
	}
	wg.Wait()
	close(stop)
	rg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	check := func() {
		for w := range want {
			wantContent(t, m.Path(fmt.Sprintf("w%d", w)), want[w])
		}
		wantContent(t, m.Path("shared"), shared)
	}
	check()
	m = m.remount()
	check()
	m.finish()
}
