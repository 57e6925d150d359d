package pagecache

import (
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/heap"
)

// Benchmarks of the cache over a real image file opened with blockdev.Open
// (io_uring and O_DIRECT where available, so cold reads reach the disk
// rather than the host page cache), next to the same I/O sent to the
// device directly. The Backing maps file bytes one to one onto the device,
// so the figures show the cache's cost, not a filesystem's.

const benchImage = 64 << 20

// identityBacking maps file offset x to device offset x: every byte is
// allocated, nothing to reserve.
type identityBacking struct{ size int64 }

func (b identityBacking) Map(off, n int64) ([]Segment, error) {
	return []Segment{{Off: off, Len: n, Dev: off}}, nil
}
func (b identityBacking) Reserve(off, n int64) error { return nil }
func (b identityBacking) PrepareWrite(off, n int64) ([]Segment, error) {
	return []Segment{{Off: off, Len: n, Dev: off}}, nil
}
func (b identityBacking) CommitWrite(off, n int64, err error) {}

type benchRig struct {
	q    *bh.Queue
	pool *heap.PagePool
	dev  blockdev.Device
	c    *Cache
}

// newBenchRig opens a fresh image. register makes the device register the
// page pool for fixed-buffer I/O, as tfsmount's mount does.
func newBenchRig(b *testing.B, budget int64, register ...bool) *benchRig {
	path := filepath.Join(b.TempDir(), "bench.img")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(chunk)
	for i := 0; i < benchImage>>20; i++ {
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	r := &benchRig{q: bh.NewQueue(2)}
	r.pool = heap.NewPagePool(heap.PoolConfig{Budget: budget + 8<<20})
	opts := blockdev.OpenOptions{Queue: r.q}
	if len(register) > 0 && register[0] {
		opts.Pool = r.pool
	}
	r.dev, err = blockdev.Open(path, opts)
	if err != nil {
		b.Fatal(err)
	}
	r.c, err = New(Config{Device: r.dev, Queue: r.q, Pool: r.pool, Budget: budget, WritebackDelay: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := r.c.Close(); err != nil {
			b.Error(err)
		}
		r.dev.Close()
		r.q.Close()
		r.pool.Close()
	})
	return r
}

// devIO sends one request of len(bufs) pages at off and waits.
func (r *benchRig) devIO(b *testing.B, op blockdev.Op, bufs [][]byte, off int64) {
	ch := make(chan error, 1)
	r.dev.Submit(&blockdev.Request{Op: op, Off: off, Bufs: bufs, Done: func(n int64, err error) { ch <- err }})
	if err := <-ch; err != nil {
		b.Fatal(err)
	}
}

func (r *benchRig) pages(b *testing.B, n int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		p, err := r.pool.Alloc()
		if err != nil {
			b.Fatal(err)
		}
		bufs[i] = p
	}
	b.Cleanup(func() {
		for _, p := range bufs {
			r.pool.Free(p)
		}
	})
	return bufs
}

// BenchmarkCachedRead4K: a 4 KiB read that hits the cache.
func BenchmarkCachedRead4K(b *testing.B) {
	r := newBenchRig(b, 8<<20)
	n := r.c.NewNode(identityBacking{})
	const size = 1 << 20
	p := make([]byte, size)
	if _, err := n.Read(p, 0, size); err != nil {
		b.Fatal(err)
	}
	p = p[:PageSize]
	b.SetBytes(PageSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if k, err := n.Read(p, int64(i%256)*PageSize, size); err != nil || k != PageSize {
			b.Fatal(k, err)
		}
	}
}

// BenchmarkColdSequentialRead1M: 1 MiB reads of data not in the cache,
// through the cache (with its read-ahead) and straight from the device.
// "fixedbufs" registers the pool with io_uring as a mount does: the
// device then sends each physically contiguous run of a request as its
// own fixed-buffer operation, and cache pages are rarely contiguous.
func BenchmarkColdSequentialRead1M(b *testing.B) {
	b.Run("pagecache", func(b *testing.B) { benchColdRead(b, false) })
	b.Run("pagecache-fixedbufs", func(b *testing.B) { benchColdRead(b, true) })
	b.Run("blockdev", func(b *testing.B) {
		r := newBenchRig(b, 8<<20)
		bufs := r.pages(b, 256)
		p := make([]byte, 1<<20)
		b.SetBytes(1 << 20)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			off := int64(i%(benchImage>>20)) << 20
			r.devIO(b, blockdev.OpRead, bufs, off)
			for j, pg := range bufs { // the copy a reply needs, as the cache does
				copy(p[j*PageSize:], pg)
			}
		}
	})
}

func benchColdRead(b *testing.B, register bool) {
	r := newBenchRig(b, 32<<20, register)
	n := r.c.NewNode(identityBacking{})
	p := make([]byte, 1<<20)
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		off := int64(i%(benchImage>>20)) << 20
		if off == 0 && i > 0 {
			n.Drop() // start cold again
			n = r.c.NewNode(identityBacking{})
		}
		if k, err := n.Read(p, off, benchImage); err != nil || k != len(p) {
			b.Fatal(k, err)
		}
	}
}

// BenchmarkSequentialWrite1M: 1 MiB writes, synced every 16 MiB, through
// the cache and straight to the device (one request per write); see
// BenchmarkColdSequentialRead1M for "fixedbufs".
func BenchmarkSequentialWrite1M(b *testing.B) {
	b.Run("pagecache", func(b *testing.B) { benchSeqWrite(b, false) })
	b.Run("pagecache-fixedbufs", func(b *testing.B) { benchSeqWrite(b, true) })
	b.Run("blockdev", func(b *testing.B) {
		r := newBenchRig(b, 8<<20)
		bufs := r.pages(b, 256)
		p := make([]byte, 1<<20)
		b.SetBytes(1 << 20)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			off := int64(i%(benchImage>>20)) << 20
			for j, pg := range bufs {
				copy(pg, p[j*PageSize:])
			}
			r.devIO(b, blockdev.OpWrite, bufs, off)
		}
	})
}

// BenchmarkPartialPageWrite: a 100-byte write into the middle of a page,
// cached (a copy and a dirty mark) and cold (read-modify-write: one
// single-page fill first).
func BenchmarkPartialPageWrite(b *testing.B) {
	b.Run("cached", func(b *testing.B) {
		r := newBenchRig(b, 8<<20)
		n := r.c.NewNode(identityBacking{})
		const size = 1 << 20
		if _, err := n.Read(make([]byte, size), 0, size); err != nil {
			b.Fatal(err)
		}
		p := make([]byte, 100)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := n.Write(p, int64(i%256)*PageSize+1000, size); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if err := n.Sync(); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("cold", func(b *testing.B) {
		r := newBenchRig(b, 8<<20)
		n := r.c.NewNode(identityBacking{})
		p := make([]byte, 100)
		rnd := rand.New(rand.NewSource(1))
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			off := rnd.Int63n(benchImage/PageSize)*PageSize + 1000
			if _, err := n.Write(p, off, benchImage); err != nil {
				b.Fatal(err)
			}
			if i%64 == 63 {
				b.StopTimer()
				if err := n.Sync(); err != nil {
					b.Fatal(err)
				}
				n.Drop()
				n = r.c.NewNode(identityBacking{})
				b.StartTimer()
			}
		}
		b.StopTimer()
		if err := n.Sync(); err != nil {
			b.Fatal(err)
		}
	})
}

func benchSeqWrite(b *testing.B, register bool) {
	r := newBenchRig(b, 32<<20, register)
	n := r.c.NewNode(identityBacking{})
	p := make([]byte, 1<<20)
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		off := int64(i%(benchImage>>20)) << 20
		if k, err := n.Write(p, off, benchImage); err != nil || k != len(p) {
			b.Fatal(k, err)
		}
		if i%16 == 15 {
			if err := n.Sync(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := n.Sync(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCopyIn1M: what a 1 MiB write costs the cache before any device
// I/O: "overwrite" writes over 1 MiB of pages already cached and dirty,
// "new" writes a fresh node's first MiB (a page buffer per page; the node
// is dropped outside the timer). The gap to memmove of 1 MiB is the cost
// of locks, maps and page states.
func BenchmarkCopyIn1M(b *testing.B) {
	p := make([]byte, 1<<20)
	b.Run("overwrite", func(b *testing.B) {
		r := newBenchRig(b, 8<<20)
		n := r.c.NewNode(identityBacking{})
		if _, err := n.Write(p, 0, 0); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(1 << 20)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if k, err := n.Write(p, 0, 1<<20); err != nil || k != len(p) {
				b.Fatal(k, err)
			}
		}
		b.StopTimer()
		n.Truncate(0)
		n.Drop()
	})
	b.Run("new", func(b *testing.B) {
		const batch = 32 // MiB written to a node before it is dropped
		r := newBenchRig(b, batch<<20)
		// Map every slab the budget allows first, so the figure is not
		// the cost of faulting fresh memory in.
		warm := r.c.NewNode(identityBacking{})
		for off := int64(0); off < batch<<20; off += 1 << 20 {
			if _, err := warm.Write(p, off, off); err != nil {
				b.Fatal(err)
			}
		}
		warm.Truncate(0)
		warm.Drop()
		n := r.c.NewNode(identityBacking{})
		b.SetBytes(1 << 20)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			off := int64(i%batch) << 20
			if k, err := n.Write(p, off, off); err != nil || k != len(p) {
				b.Fatal(k, err)
			}
			if i%batch == batch-1 {
				b.StopTimer()
				n.Truncate(0)
				n.Drop()
				n = r.c.NewNode(identityBacking{})
				b.StartTimer()
			}
		}
		b.StopTimer()
		n.Truncate(0)
		n.Drop()
	})
	b.Run("memmove", func(b *testing.B) {
		dst := make([]byte, 1<<20)
		b.SetBytes(1 << 20)
		for i := 0; i < b.N; i++ {
			copy(dst, p)
		}
	})
}
