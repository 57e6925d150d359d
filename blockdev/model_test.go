package blockdev

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/heap"
)

// The model check: workers issue random reads, writes, flushes and discards
// through Submit, each on a range it has locked in a stripe table (the
// device makes no promise for overlapping requests in flight), and keep a
// byte-for-byte model of the device. Every read is compared with the model,
// and so is the whole device at the end. Requests mix Go buffers at odd
// addresses and lengths (buffered path), page-heap pages (O_DIRECT and
// fixed-buffer path), and thousands of small buffers (split at IOV_MAX);
// a small Depth keeps the ring full so submitters block.

const (
	modelSize   = 8 << 20
	modelStripe = 64 << 10
)

type modelRun struct {
	t       *testing.T
	d       Device
	pool    *heap.PagePool
	mu      sync.Mutex // guards model
	model   []byte
	stripes [modelSize / modelStripe]sync.Mutex
}

func (m *modelRun) lock(off, n int64) func() {
	first, last := off/modelStripe, (off+max(n, 1)-1)/modelStripe
	for i := first; i <= last; i++ {
		m.stripes[i].Lock()
	}
	return func() {
		for i := first; i <= last; i++ {
			m.stripes[i].Unlock()
		}
	}
}

// submitWait submits r and waits, checking Done runs exactly once.
func (m *modelRun) submitWait(r *Request) (int64, error) {
	type res struct {
		n   int64
		err error
	}
	ch := make(chan res, 2)
	r.Done = func(n int64, err error) { ch <- res{n, err} }
	m.d.Submit(r)
	got := <-ch
	if len(ch) != 0 {
		m.t.Errorf("%s at %d: Done called twice", r.Op, r.Off)
	}
	return got.n, got.err
}

// buffers cuts n bytes into buffers of the given style.
func (m *modelRun) buffers(rng *rand.Rand, n int, style int) (bufs [][]byte, free func()) {
	free = func() {}
	switch style {
	case 0: // one Go buffer at an odd address
		b := make([]byte, n+1)[1:]
		return [][]byte{b}, free
	case 1: // many small buffers, beyond IOV_MAX when n is large
		for n > 0 {
			k := min(n, 1+rng.Intn(700))
			bufs = append(bufs, make([]byte, k))
			n -= k
		}
		return bufs, free
	default: // page-heap pages (n is a multiple of the page size here)
		var pages [][]byte
		for n > 0 {
			p, err := m.pool.Alloc()
			if err != nil {
				m.t.Fatalf("page alloc: %v", err)
			}
			pages = append(pages, p)
			bufs = append(bufs, p[:min(n, heap.PageSize)])
			n -= heap.PageSize
		}
		return bufs, func() {
			for _, p := range pages {
				m.pool.Free(p)
			}
		}
	}
}

func (m *modelRun) worker(seed int64, ops int, wg *sync.WaitGroup) {
	defer wg.Done()
	rng := rand.New(rand.NewSource(seed))
	for i := 0; i < ops && !m.t.Failed(); i++ {
		style := rng.Intn(3)
		var off, n int64
		switch rng.Intn(4) {
		case 0: // large, IOV_MAX-crossing
			n = int64(256<<10 + rng.Intn(256<<10))
			style = 1
		case 1: // page aligned
			n = int64(heap.PageSize * (1 + rng.Intn(32)))
		default:
			n = int64(1 + rng.Intn(20000))
		}
		if style == 2 {
			n = (n + heap.PageSize - 1) / heap.PageSize * heap.PageSize
			off = int64(rng.Intn(modelSize/heap.PageSize)) * heap.PageSize
		} else {
			off = int64(rng.Intn(modelSize))
		}
		n = min(n, modelSize-off)
		if n == 0 {
			continue
		}
		unlock := m.lock(off, n)
		switch k := rng.Intn(20); {
		case k == 0:
			if _, err := m.submitWait(&Request{Op: OpFlush}); err != nil {
				m.t.Errorf("flush: %v", err)
			}
		case k == 1:
			doff, dn := off/512*512, n/512*512
			if _, err := m.submitWait(&Request{Op: OpDiscard, Off: doff, Length: dn}); err != nil {
				m.t.Errorf("discard %d at %d: %v", dn, doff, err)
			}
			m.mu.Lock()
			clear(m.model[doff : doff+dn])
			m.mu.Unlock()
		case k < 11:
			bufs, free := m.buffers(rng, int(n), style)
			pos := 0
			for _, b := range bufs {
				rng.Read(b)
				pos += len(b)
			}
			got, err := m.submitWait(&Request{Op: OpWrite, Off: off, Bufs: bufs})
			if err != nil || got != n {
				m.t.Errorf("write %d at %d (%d bufs): n=%d err=%v", n, off, len(bufs), got, err)
			}
			m.mu.Lock()
			pos = int(off)
			for _, b := range bufs {
				pos += copy(m.model[pos:], b)
			}
			m.mu.Unlock()
			free()
		default:
			bufs, free := m.buffers(rng, int(n), style)
			got, err := m.submitWait(&Request{Op: OpRead, Off: off, Bufs: bufs})
			if err != nil || got != n {
				m.t.Errorf("read %d at %d (%d bufs): n=%d err=%v", n, off, len(bufs), got, err)
			}
			m.mu.Lock()
			pos := int(off)
			for _, b := range bufs {
				if !bytes.Equal(b, m.model[pos:pos+len(b)]) {
					m.t.Errorf("read %d at %d: bytes at %d differ from the model", n, off, pos)
					break
				}
				pos += len(b)
			}
			m.mu.Unlock()
			free()
		}
		unlock()
	}
}

// runModel drives d with workers and checks it against the model.
func runModel(t *testing.T, d Device, pool *heap.PagePool, initial []byte, workers, ops int) {
	m := &modelRun{t: t, d: d, pool: pool, model: append([]byte(nil), initial...)}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go m.worker(int64(w)*7919+1, ops, &wg)
	}
	wg.Wait()
	all := make([]byte, modelSize)
	if err := ReadAt(d, all, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(all, m.model); i >= 0 {
		t.Fatalf("device differs from the model at byte %d", i)
	}
	if err := Flush(d); err != nil {
		t.Fatal(err)
	}
	if pool.InUse() != 0 {
		t.Fatalf("%d pages still in use", pool.InUse())
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

func TestModelMemory(t *testing.T) {
	q := bh.NewQueue(2)
	defer q.Close()
	pool := heap.NewPagePool(heap.PoolConfig{Budget: 64 << 20})
	defer pool.Close()
	init := make([]byte, modelSize)
	runModel(t, NewMemoryFrom(q, init, false), pool, init, 8, 300)
}

func TestModelFile(t *testing.T) {
	for _, tc := range []struct {
		io       string
		depth    int
		buffered bool
	}{
		{"uring", 4, false}, {"uring", 64, false}, {"uring", 8, true}, {"sync", 4, false}, {"sync", 16, true},
	} {
		t.Run(fmt.Sprintf("%s-depth%d-buffered=%v", tc.io, tc.depth, tc.buffered), func(t *testing.T) {
			q := bh.NewQueue(2)
			defer q.Close()
			pool := heap.NewPagePool(heap.PoolConfig{Budget: 64 << 20})
			defer func() {
				if err := pool.Close(); err != nil {
					t.Error(err)
				}
			}()
			path, data := imageOf(t, t.TempDir(), modelSize)
			d, err := Open(path, OpenOptions{IO: tc.io, Queue: q, Pool: pool, Depth: tc.depth, Buffered: tc.buffered})
			if err != nil {
				t.Fatal(err)
			}
			t.Log(Describe(d))
			runModel(t, d, pool, data, 8, 250)
			if tc.io == "uring" && !strings.Contains(Describe(d), "registered") {
				t.Errorf("page heap not registered: %s", Describe(d))
			}
			st, _ := DeviceStats(d)
			t.Logf("stats: %+v", st)
			if st.Errors != 0 || st.Requests() < 8*250 {
				t.Errorf("stats %+v: want no errors and every request counted", st)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestModelLoopDevice(t *testing.T) {
	path, data := imageOf(t, t.TempDir(), modelSize)
	out, err := exec.Command("losetup", "-f", "--show", path).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", loop).Run()
	for _, io := range backends {
		t.Run(io, func(t *testing.T) {
			q := bh.NewQueue(2)
			defer q.Close()
			pool := heap.NewPagePool(heap.PoolConfig{Budget: 64 << 20})
			defer pool.Close()
			d, err := Open(loop, OpenOptions{IO: io, Queue: q, Pool: pool, Depth: 8})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if d.Size() != modelSize || !strings.Contains(Describe(d), "block device") {
				t.Fatalf("size %d, %s", d.Size(), Describe(d))
			}
			t.Log(Describe(d))
			runModel(t, d, pool, data, 6, 150)
			all := make([]byte, modelSize)
			if err := ReadAt(d, all, 0); err != nil {
				t.Fatal(err)
			}
			data = all // the next backend starts from this content
		})
	}
	if _, err := os.Stat(filepath.Clean(loop)); err != nil {
		t.Fatal(err)
	}
}

// TestModelFaultyReordered runs the model over io_uring behind a Faulty
// device that delays every completion at random (so they arrive out of
// order) and cuts nothing: reordering alone must not change any result.
func TestModelFaultyReordered(t *testing.T) {
	q := bh.NewQueue(2)
	defer q.Close()
	pool := heap.NewPagePool(heap.PoolConfig{Budget: 64 << 20})
	defer pool.Close()
	path, data := imageOf(t, t.TempDir(), modelSize)
	d, err := Open(path, OpenOptions{IO: "uring", Queue: q, Pool: pool, Depth: 8})
	if err != nil {
		t.Fatal(err)
	}
	f := NewFaulty(d, q)
	f.Delay(300*time.Microsecond, 42)
	runModel(t, f, pool, data, 8, 120)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
