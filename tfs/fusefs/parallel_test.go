package fusefs

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"
)

// TestParallelFilesAndDirs runs writers, readers and namespace changes in
// parallel through the mount (go-fuse serves each request on its own
// goroutine; there is no lock here) and checks every file's contents.
func TestParallelFilesAndDirs(t *testing.T) {
	v := newTestVolume(t, Config{})
	const workers, files, size = 4, 8, 300000
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			dir := v.path(fmt.Sprintf("w%d", w))
			if err := os.Mkdir(dir, 0o755); err != nil {
				errs <- err
				return
			}
			for i := 0; i < files; i++ {
				data := bytes.Repeat([]byte{byte(w*files + i)}, size+i)
				p := fmt.Sprintf("%s/f%d", dir, i)
				if err := os.WriteFile(p, data, 0o644); err != nil {
					errs <- err
					return
				}
				got, err := os.ReadFile(p)
				if err != nil || !bytes.Equal(got, data) {
					errs <- fmt.Errorf("%s: read back %d bytes, %v", p, len(got), err)
					return
				}
				if i%2 == 1 {
					if err := os.Rename(p, p+".odd"); err != nil {
						errs <- err
						return
					}
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	v.remount(Config{})
	for w := 0; w < workers; w++ {
		for i := 0; i < files; i++ {
			p := v.path(fmt.Sprintf("w%d/f%d", w, i))
			if i%2 == 1 {
				p += ".odd"
			}
			got, err := os.ReadFile(p)
			if err != nil || len(got) != size+i || got[0] != byte(w*files+i) || got[len(got)-1] != byte(w*files+i) {
				t.Errorf("%s after remount: %d bytes, %v", p, len(got), err)
			}
		}
	}
}
