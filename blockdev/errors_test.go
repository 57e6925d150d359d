package blockdev

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tfsmount/tfsmount/bh"
)

// TestKernelErrorsReachRequester makes the kernel fail real requests: a
// buffer in PROT_NONE memory gives EFAULT, and a file truncated behind the
// device's back makes reads hit EOF. Each error must reach Done exactly
// once, name the image, and leave every slot free.
func TestKernelErrorsReachRequester(t *testing.T) {
	guard, err := unix.Mmap(-1, 0, 8192, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(guard)
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			q := bh.NewQueue(2)
			defer q.Close()
			path, _ := imageOf(t, t.TempDir(), 1<<20)
			d := openT(t, path, OpenOptions{IO: backend, Queue: q, Depth: 4})
			var wg sync.WaitGroup
			var mu sync.Mutex
			calls := map[int]int{}
			errs := map[int]error{}
			for i := 0; i < 32; i++ {
				wg.Add(1)
				r := &Request{Op: OpRead, Off: int64(i) * 8192, Bufs: [][]byte{make([]byte, 4096), guard}}
				r.Done = func(n int64, err error) {
					mu.Lock()
					calls[i]++
					errs[i] = err
					mu.Unlock()
					wg.Done()
				}
				d.Submit(r)
			}
			wg.Wait()
			for i := 0; i < 32; i++ {
				if calls[i] != 1 {
					t.Fatalf("request %d: Done called %d times", i, calls[i])
				}
				if !errors.Is(errs[i], unix.EFAULT) || !strings.Contains(errs[i].Error(), path) {
					t.Fatalf("request %d: %v, want EFAULT naming the image", i, errs[i])
				}
			}
			// The device still works after the failures.
			buf := make([]byte, 4096)
			if err := ReadAt(d, buf, 0); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, 64<<10); err != nil {
				t.Fatal(err)
			}
			err := ReadAt(d, buf, 512<<10)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("read past the truncated end: %v", err)
			}
			st, _ := DeviceStats(d)
			if st.Errors != 33 {
				t.Fatalf("stats count %d errors, want 33", st.Errors)
			}
			if u, ok := d.(*uringDev); ok && len(u.free) != len(u.slots) {
				t.Fatalf("%d of %d slots free", len(u.free), len(u.slots))
			}
		})
	}
}

// TestUringShortTransferResubmits drives the io_uring retry path directly,
// since regular files rarely return short transfers on demand: a CQE
// reporting half of a part must lead to a resubmission of the other half
// and a full count in Done. (Faulty covers short counts seen by callers.)
func TestUringShortTransferResubmits(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	path, data := imageOf(t, t.TempDir(), 1<<20)
	d := openT(t, path, OpenOptions{IO: "uring", Queue: q})
	u := d.(*uringDev)
	got := make([]byte, 3000)
	done := make(chan error, 1)
	var n int64
	r := &Request{Op: OpRead, Off: 100, Bufs: [][]byte{got[:1000], got[1000:]}, Done: func(m int64, err error) { n = m; done <- err }}
	r.parts, r.stats, r.start, r.owner = 1, &u.stats, nowNs(), u.imageFile
	s := u.take(r)
	s.op, s.off, s.bufs, s.want, s.fd = OpRead, 100, r.Bufs, 3000, u.fd
	// Pretend the kernel read 1500 bytes: copy them as it would have.
	copy(got[:1500], data[100:1600])
	s.armed.Store(1)
	u.dropPart(r)
	u.onCQE(uint64(s.idx), 1500)
	if err := <-done; err != nil || n != 3000 {
		t.Fatalf("n=%d err=%v", n, err)
	}
	if string(got) != string(data[100:3100]) {
		t.Fatal("resumed read returned wrong bytes")
	}
	if st := u.Stats(); st.Retries != 1 {
		t.Fatalf("retries %d, want 1", st.Retries)
	}
}

// TestRetryWhileBHWorkerWaitsForSlot: a Submit on a bh worker (nothing in
// the tree submits from one today, but take must stay safe if something
// does) waits for a slot while every slot holds a short transfer that must
// be resubmitted. The resubmissions must not depend on a bh worker being
// free, or the only worker waits for slots that wait for it.
func TestRetryWhileBHWorkerWaitsForSlot(t *testing.T) {
	q := bh.NewQueue(1)
	path, data := imageOf(t, t.TempDir(), 1<<20)
	d, err := Open(path, OpenOptions{IO: "uring", Queue: q, Depth: 2})
	if err != nil {
		t.Fatal(err)
	}
	u := d.(*uringDev)
	if len(u.slots) != 2 {
		t.Fatalf("%d slots, want 2", len(u.slots))
	}
	done := make(chan error, 3)
	var slots []*slot
	var bufs [][]byte
	for i := 0; i < 2; i++ {
		got := make([]byte, 4096)
		off := int64(8192 * (i + 1))
		r := &Request{Op: OpRead, Off: off, Bufs: [][]byte{got}, Done: func(n int64, err error) {
			if err == nil && (n != 4096 || !bytes.Equal(got, data[off:off+4096])) {
				err = fmt.Errorf("read at %d: n=%d or wrong bytes", off, n)
			}
			done <- err
		}}
		r.parts, r.stats, r.start, r.owner = 1, &u.stats, nowNs(), u.imageFile
		s := u.take(r)
		s.op, s.off, s.bufs, s.want, s.fd = OpRead, off, r.Bufs, 4096, u.fd
		copy(got[:1000], data[off:off+1000]) // as if the kernel read 1000 bytes
		s.armed.Store(1)
		u.dropPart(r)
		slots, bufs = append(slots, s), append(bufs, got)
	}
	// The only bh worker submits and waits for a slot.
	third := make([]byte, 4096)
	q.PostFunc(func() {
		d.Submit(&Request{Op: OpRead, Off: 0, Bufs: [][]byte{third}, Done: func(n int64, err error) {
			if err == nil && (n != 4096 || !bytes.Equal(third, data[:4096])) {
				err = fmt.Errorf("third read: n=%d or wrong bytes", n)
			}
			done <- err
		}})
	})
	time.Sleep(50 * time.Millisecond) // let it block in take
	for _, s := range slots {
		u.onCQE(uint64(s.idx), 1000)
	}
	for i := 0; i < 3; i++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			// Leave d and q open: closing them would wait forever.
			t.Fatalf("%d of 3 requests completed: the retries wait for the bh worker that waits for their slots", i)
		}
	}
	if st := u.Stats(); st.Retries != 2 {
		t.Fatalf("retries %d, want 2", st.Retries)
	}
	d.Close()
	q.Close()
}
