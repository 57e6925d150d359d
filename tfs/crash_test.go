package tfs

import (
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/blockdev"
)

// Crash consistency: device images captured at arbitrary moments while a
// workload runs (what a power cut would leave, with every write request
// atomic) must mount and pass fsck, and every file must read without error.
// Data is written before the log records that reference it, so a captured
// image never shows an extent whose blocks were not written.
func TestCrashImagesMount(t *testing.T) {
	dev := newVolume(t, 64<<20, "crash")
	q := testQueue(t)
	fs := mountMem(t, dev, Options{Queue: q, WritebackDelay: 3 * time.Millisecond})
	var snaps [][]byte
	var mu sync.Mutex
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(7 * time.Millisecond):
				b := dev.Bytes()
				mu.Lock()
				snaps = append(snaps, b)
				mu.Unlock()
			}
		}
	}()
	rng := rand.New(rand.NewSource(3))
	root := fs.Root()
	names := []string{}
	for i := 0; i < 400; i++ {
		switch op := rng.Intn(6); {
		case op <= 1 || len(names) == 0:
			name := fmt.Sprintf("f%d", i)
			f, err := fs.Create(root, name, true)
			must(t, err)
			writeAll(t, fs, f, pattern(int64(i), rng.Intn(200000)+1), int64(rng.Intn(100000)))
			names = append(names, name)
		case op == 2:
			k := rng.Intn(len(names))
			must(t, fs.Unlink(root, names[k]))
			names = append(names[:k], names[k+1:]...)
		case op == 3:
			k := rng.Intn(len(names))
			n := fmt.Sprintf("r%d", i)
			must(t, fs.Rename(root, names[k], root, n, 0))
			names[k] = n
		case op == 4:
			f := mk(t)(fs.Lookup(root, names[rng.Intn(len(names))]))
			must(t, fs.Truncate(f, int64(rng.Intn(150000))))
		case op == 5:
			f := mk(t)(fs.Lookup(root, names[rng.Intn(len(names))]))
			writeAll(t, fs, f, pattern(int64(i), 5000), int64(rng.Intn(300000)))
		}
		if i%40 == 0 {
			// Also capture at op boundaries, so a loaded machine still
			// yields enough images; the flusher runs concurrently.
			b := dev.Bytes()
			mu.Lock()
			snaps = append(snaps, b)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}
	close(stop)
	<-done
	checkInvariants(t, fs)
	must(t, fs.Close())
	mu.Lock()
	snaps = append(snaps, dev.Bytes())
	mu.Unlock()
	if len(snaps) < 5 {
		t.Fatalf("only %d snapshots", len(snaps))
	}
	for i, img := range snaps {
		rep, err := Fsck(blockdev.NewMemoryFrom(q, img, true), Options{})
		if err != nil || !rep.Clean() {
			t.Fatalf("snapshot %d: fsck %v %v", i, rep, err)
		}
		cfs := mountMem(t, blockdev.NewMemoryFrom(q, img, true), Options{Queue: q, ReadOnly: true})
		for p, n := range walkTree(t, cfs) {
			if n.kind == KindFile {
				buf := make([]byte, cfs.Getattr(n).Size)
				if _, err := cfs.Read(n, buf, 0); err != nil {
					t.Fatalf("snapshot %d: read %s: %v", i, p, err)
				}
			}
		}
		must(t, cfs.Close())
	}
	t.Logf("%d snapshots checked", len(snaps))
}
