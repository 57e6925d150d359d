package blockdev

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev/uring"
)

// TestUringSplitsAtIOVMaxAndRingSize checks the part count of requests at
// the IOV_MAX boundary, and that a request with more parts than the ring
// has slots still completes (its submitter waits for its own parts).
func TestUringSplitsAtIOVMaxAndRingSize(t *testing.T) {
	q := bh.NewQueue(2)
	defer q.Close()
	path, data := imageOf(t, t.TempDir(), 8<<20)
	d := openT(t, path, OpenOptions{IO: "uring", Queue: q, Depth: 2})
	u := d.(*uringDev)
	if len(u.slots) != 2 {
		t.Fatalf("%d slots, want 2", len(u.slots))
	}
	for _, c := range []struct{ bufs, parts int }{{1, 1}, {iovMax, 1}, {iovMax + 1, 2}, {5*iovMax + 3, 6}} {
		bufs := make([][]byte, c.bufs)
		want := make([]byte, 0, c.bufs*3)
		for i := range bufs {
			bufs[i] = make([]byte, 3)
		}
		want = append(want, data[1000:1000+3*c.bufs]...)
		before := u.sqes.Load()
		n, err := wait(d, &Request{Op: OpRead, Off: 1000, Bufs: bufs})
		if err != nil || n != int64(3*c.bufs) {
			t.Fatalf("%d buffers: n=%d err=%v", c.bufs, n, err)
		}
		if got := u.sqes.Load() - before; got != uint64(c.parts) {
			t.Fatalf("%d buffers went out as %d SQEs, want %d", c.bufs, got, c.parts)
		}
		if !bytes.Equal(bytes.Join(bufs, nil), want) {
			t.Fatalf("%d buffers: wrong data", c.bufs)
		}
	}
	if len(u.free) != 2 {
		t.Fatalf("%d slots free after the requests", len(u.free))
	}
}

// TestOpenAutoFallsBackToSync makes io_uring_setup fail as a seccomp
// profile or io_uring_disabled would, and checks the three modes.
func TestOpenAutoFallsBackToSync(t *testing.T) {
	saved := setupRingFn
	defer func() { setupRingFn = saved }()
	setupRingFn = func(int) (*uring.Ring, error) { return nil, fmt.Errorf("io_uring_setup: %w", unix.EPERM) }
	q := bh.NewQueue(1)
	defer q.Close()
	path, data := imageOf(t, t.TempDir(), 64<<10)
	var notices []string
	logf := func(format string, args ...any) { notices = append(notices, fmt.Sprintf(format, args...)) }
	if _, err := Open(path, OpenOptions{Queue: q, IO: "uring", Logf: logf}); err == nil || !strings.Contains(err.Error(), "operation not permitted") {
		t.Fatalf("uring mode without io_uring: %v", err)
	}
	d, err := Open(path, OpenOptions{Queue: q, Logf: logf})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if len(notices) != 1 || !strings.Contains(notices[0], "sync I/O backend") || !strings.Contains(notices[0], "operation not permitted") {
		t.Fatalf("notices %q", notices)
	}
	if desc := Describe(d); !strings.HasPrefix(desc, "sync (io_uring unavailable") {
		t.Fatalf("Describe = %q", desc)
	}
	got := make([]byte, 100)
	if err := ReadAt(d, got, 5); err != nil || !bytes.Equal(got, data[5:105]) {
		t.Fatalf("fallback read: %v", err)
	}
}

// TestReaperRecyclesSlotsWhileBHStalls stalls every bh worker and submits
// far more requests than the ring has slots: the reaper must keep freeing
// slots on its own (no allocation, no bh), so every Submit returns, and
// every completion is delivered once the workers resume.
func TestReaperRecyclesSlotsWhileBHStalls(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	path, _ := imageOf(t, t.TempDir(), 1<<20)
	d := openT(t, path, OpenOptions{IO: "uring", Queue: q, Depth: 4})
	release := make(chan struct{})
	var unstallOnce sync.Once
	unstall := func() { unstallOnce.Do(func() { close(release) }) }
	// Deferred after q.Close, so it runs first: a failing check must not
	// leave Close waiting for the stalled worker forever.
	defer unstall()
	stalled := make(chan struct{})
	q.PostFunc(func() { close(stalled); <-release })
	<-stalled
	const n = 500
	var delivered sync.WaitGroup
	delivered.Add(n)
	submitted := make(chan struct{})
	go func() {
		for i := 0; i < n; i++ {
			d.Submit(&Request{Op: OpRead, Off: int64(i%256) * 4096, Bufs: [][]byte{make([]byte, 4096)},
				Done: func(int64, error) { delivered.Done() }})
		}
		close(submitted)
	}()
	select {
	case <-submitted:
	case <-time.After(20 * time.Second):
		t.Fatal("Submit blocked while bh workers were stalled: slots are not recycled by the reaper")
	}
	// Submit returning means every request got a slot, not that it has
	// finished: the reaper frees a slot before it posts that request's
	// completion, so the last few may still be on their way.
	for deadline := time.Now().Add(20 * time.Second); q.Len() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d completions queued while bh was stalled", q.Len(), n)
		}
	}
	unstall()
	waitOrDump(t, &delivered, "completions after the stall")
}

// SubmitAll hands a batch of scattered writes to io_uring with one
// io_uring_enter (more only while waiting for slots), through a Slice
// too, and every byte lands where it should on both backends.
func TestSubmitAllBatches(t *testing.T) {
	for _, io := range backends {
		t.Run(io, func(t *testing.T) {
			q := bh.NewQueue(2)
			defer q.Close()
			path, data := imageOf(t, t.TempDir(), 4<<20)
			d := openT(t, path, OpenOptions{IO: io, Queue: q, Depth: 64})
			const base = 1 << 20
			dev := Device(NewSlice(d, base, 2<<20))
			var wg sync.WaitGroup
			var mu sync.Mutex
			var errs []error
			var reqs []*Request
			for i := 0; i < 48; i++ {
				off := int64(i) * 3 * 4096 // every third page
				buf := make([]byte, 4096)
				for j := range buf {
					buf[j] = byte(i + 1)
				}
				copy(data[base+off:], buf)
				wg.Add(1)
				reqs = append(reqs, &Request{Op: OpWrite, Off: off, Bufs: [][]byte{buf}, Done: func(n int64, err error) {
					if err == nil && n != 4096 {
						err = fmt.Errorf("wrote %d bytes", n)
					}
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					}
					mu.Unlock()
					wg.Done()
				}})
			}
			// One request out of the window fails on its own.
			wg.Add(1)
			var outErr error
			reqs = append(reqs, &Request{Op: OpWrite, Off: 2 << 20, Bufs: [][]byte{make([]byte, 4096)}, Done: func(n int64, err error) {
				outErr = err
				wg.Done()
			}})
			var before uint64
			if u, ok := d.(*uringDev); ok {
				before = u.enters.Load()
			}
			SubmitAll(dev, reqs)
			wg.Wait()
			if len(errs) > 0 {
				t.Fatal(errs[0])
			}
			if outErr == nil {
				t.Fatal("a write past the slice succeeded")
			}
			if u, ok := d.(*uringDev); ok {
				// One enter; a resubmitted short or EAGAIN'd part may
				// add one now and then. Unbatched, it is 48.
				if n := u.enters.Load() - before; n > 3 {
					t.Errorf("48 writes took %d io_uring_enter calls, want 1", n)
				}
			}
			got := make([]byte, len(data))
			if _, err := wait(d, &Request{Op: OpRead, Off: 0, Bufs: [][]byte{got}}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("the device does not hold what the batch wrote")
			}
		})
	}
}

// TestSubmitAllMoreThanTheRing: a batch of discards, flushes and writes
// several times larger than the ring completes. A batch queues without
// entering the kernel; before waiting for a slot, the submitter must hand
// it what is queued, or no slot comes back (a batch of discards hung a
// mount in xfstests' generic/014 that way).
func TestSubmitAllMoreThanTheRing(t *testing.T) {
	for _, io := range backends {
		t.Run(io, func(t *testing.T) {
			q := bh.NewQueue(2)
			defer q.Close()
			path, _ := imageOf(t, t.TempDir(), 4<<20)
			d := openT(t, path, OpenOptions{IO: io, Queue: q, Depth: 8})
			var reqs []*Request
			// Discards and flushes first: unlike writes, nothing between
			// them enters the kernel on its own.
			for i := 0; i < 200; i++ {
				switch {
				case i >= 150:
					reqs = append(reqs, &Request{Op: OpWrite, Off: int64(i) * 4096, Bufs: [][]byte{make([]byte, 4096)}})
				case i%2 == 0:
					reqs = append(reqs, &Request{Op: OpDiscard, Off: int64(i) * 4096, Length: 4096})
				default:
					reqs = append(reqs, &Request{Op: OpFlush})
				}
			}
			done := make(chan error, 1)
			go func() { done <- submitAndWait(d, reqs) }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(30 * time.Second):
				// Closing the device (the cleanup, which runs even after
				// a panic) would wait on the stuck batch too: end the run
				// here, with every stack.
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				fmt.Fprintf(os.Stderr, "FAIL: a batch larger than the ring did not complete in 30 s\n%s", buf[:n])
				os.Exit(1)
			}
		})
	}
}
