package blockdev

import (
	"bytes"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/heap"
)

// TestReaperHandlerAllocatesNothing runs the CQE handler's fast path (a
// part that moved everything, the request's last part, completion posted
// to the bhqueue) and checks it allocates nothing: it runs in interrupt
// context.
func TestReaperHandlerAllocatesNothing(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	path, _ := imageOf(t, t.TempDir(), 1<<20)
	d := openT(t, path, OpenOptions{IO: "uring", Queue: q})
	u := d.(*uringDev)
	var delivered atomic.Int64
	r := &Request{Op: OpRead, Bufs: [][]byte{make([]byte, 4096)}, Done: func(n int64, err error) {
		if err == nil {
			delivered.Add(n)
		}
	}}
	runs := 0
	allocs := testing.AllocsPerRun(1000, func() {
		// r is reused: its last completion must have been delivered (the
		// bh worker reads r until then).
		for delivered.Load() != int64(runs)*4096 {
			runtime.Gosched()
		}
		// What Submit does before handing a part to the kernel...
		r.parts, r.moved, r.fail, r.stats, r.start, r.owner = 1, 0, 0, &u.stats, nowNs(), u.imageFile
		s := u.take(r)
		s.op, s.off, s.bufs, s.want = OpRead, 0, r.Bufs, 4096
		s.armed.Store(1)
		u.dropPart(r) // the submitter's own reference
		// ...and what the reaper does with its CQE.
		if !u.onCQE(uint64(s.idx), 4096) {
			t.Fatal("onCQE asked to stop")
		}
		runs++
	})
	if allocs != 0 {
		t.Fatalf("CQE handler allocates %.1f times per completion, want 0", allocs)
	}
	// Every completion must still reach its Done, once, through the queue.
	want := int64(runs) * 4096
	for deadline := time.Now().Add(5 * time.Second); delivered.Load() != want; {
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d bytes, want %d", delivered.Load(), want)
		}
		runtime.Gosched()
	}
	if len(u.free) != len(u.slots) {
		t.Fatalf("%d of %d slots free after the run", len(u.free), len(u.slots))
	}
}

// TestFixedBuffersUsedForPoolPages checks that a run of adjacent page-heap
// pages is recognised as one registered-buffer op.
func TestFixedBuffersUsedForPoolPages(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	pool := heap.NewPagePool(heap.PoolConfig{Budget: 8 << 20})
	defer pool.Close()
	path, _ := imageOf(t, t.TempDir(), 1<<20)
	d := openT(t, path, OpenOptions{IO: "uring", Queue: q, Pool: pool})
	u := d.(*uringDev)
	var pages [][]byte
	for i := 0; i < 4; i++ {
		p, err := pool.Alloc()
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, p)
	}
	defer func() {
		for _, p := range pages {
			pool.Free(p)
		}
	}()
	u.fixed.settle() // the new slab's registration is asynchronous
	if n := u.fixed.run(pages); n != 4 {
		t.Fatalf("run of 4 adjacent pages = %d, want 4", n)
	}
	if idx, ok := pool.SlabIndex(pages[0]); !ok || u.fixed.index(pages[0]) != idx {
		t.Fatalf("fixed index %d, slab %d %v", u.fixed.index(pages[0]), idx, ok)
	}
	if n := u.fixed.run([][]byte{make([]byte, 4096)}); n != 0 {
		t.Fatalf("Go buffer counted as registered (%d)", n)
	}
	if n := u.fixed.run([][]byte{pages[0], pages[2]}); n != 1 {
		t.Fatalf("non-adjacent pages joined into one run (%d)", n)
	}
	for i, p := range pages {
		p[0] = byte(i + 1)
	}
	if err := WriteAt(d, pages[0][:4096], 0); err != nil {
		t.Fatal(err)
	}
	n, err := wait(d, &Request{Op: OpWrite, Off: 4096, Bufs: pages[1:]})
	if err != nil || n != 3*4096 {
		t.Fatalf("fixed write: %d %v", n, err)
	}
	got := make([]byte, 4*4096)
	if err := ReadAt(d, got, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if got[i*4096] != byte(i+1) {
			t.Fatalf("page %d reads back %d", i, got[i*4096])
		}
	}
}

// TestScatteredPoolPagesGoOutVectored checks how a request over page-heap
// pages is cut: scattered pages go out as one READV, not one fixed op per
// page; a long contiguous run stays a fixed op of its own; and the data
// lands in the right buffers either way.
func TestScatteredPoolPagesGoOutVectored(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	pool := heap.NewPagePool(heap.PoolConfig{Budget: 8 << 20})
	defer pool.Close()
	path, data := imageOf(t, t.TempDir(), 4<<20)
	d := openT(t, path, OpenOptions{IO: "uring", Queue: q, Pool: pool})
	u := d.(*uringDev)
	if u.fixed == nil {
		t.Fatal("page heap not registered")
	}
	var all [][]byte
	for i := 0; i < 128; i++ {
		p, err := pool.Alloc()
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, p)
	}
	defer func() {
		for _, p := range all {
			pool.Free(p)
		}
	}()
	u.fixed.settle() // the new slab's registration is asynchronous
	// Every other page: 32 runs of one page each. Then the 64 pages that
	// are contiguous (a 256 KiB run) followed by 4 scattered ones.
	var scattered [][]byte
	for i := 0; i < 64; i += 2 {
		scattered = append(scattered, all[i])
	}
	if u.fixed.run(scattered) != 1 {
		t.Fatalf("alternate pages counted as a run of %d", u.fixed.run(scattered))
	}
	long := append([][]byte{}, all[64:128]...)
	if u.fixed.run(long) != 64 {
		t.Fatalf("the pool did not hand out 64 adjacent pages (run %d)", u.fixed.run(long))
	}
	mixed := append(long, all[1], all[3], all[5], all[7])
	for _, c := range []struct {
		name  string
		bufs  [][]byte
		parts uint64
	}{{"scattered", scattered, 1}, {"long run then scattered", mixed, 2}, {"one page", all[9:10], 1}} {
		before := u.sqes.Load()
		off := int64(12288)
		n, err := wait(d, &Request{Op: OpRead, Off: off, Bufs: c.bufs})
		if err != nil || n != int64(len(c.bufs))*4096 {
			t.Fatalf("%s: n=%d err=%v", c.name, n, err)
		}
		if got := u.sqes.Load() - before; got != c.parts {
			t.Fatalf("%s: %d pages went out as %d SQEs, want %d", c.name, len(c.bufs), got, c.parts)
		}
		if !bytes.Equal(bytes.Join(c.bufs, nil), data[off:off+n]) {
			t.Fatalf("%s: wrong data", c.name)
		}
	}
}
