package blockdev

import (
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/heap"
)

// Benchmarks of the backends on one file, with O_DIRECT page-heap buffers
// so that they measure the device path, not the host page cache. Set
// BLOCKDEV_BENCH_FILE to use an existing file (scripts/bench_fio.sh does,
// so fio and these runs read the same file); otherwise a 256 MiB file is
// made.

const benchFileSize = 256 << 20

func benchFile(b *testing.B) string {
	if p := os.Getenv("BLOCKDEV_BENCH_FILE"); p != "" {
		return p
	}
	path := filepath.Join(b.TempDir(), "bench.img")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(chunk)
	for i := 0; i < benchFileSize>>20; i++ {
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return path
}

type benchEnv struct {
	q    *bh.Queue
	pool *heap.PagePool
	d    Device
}

func openBench(b *testing.B, backend string, depth int) *benchEnv {
	q := bh.NewQueue(2)
	pool := heap.NewPagePool(heap.PoolConfig{Budget: 256 << 20})
	d, err := Open(benchFile(b), OpenOptions{IO: backend, Queue: q, Pool: pool, Depth: depth})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		d.Close()
		q.Close()
		pool.Close()
	})
	return &benchEnv{q: q, pool: pool, d: d}
}

func (e *benchEnv) pages(b *testing.B, n int) [][]byte {
	var out [][]byte
	for i := 0; i < n; i++ {
		p, err := e.pool.Alloc()
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// runQD issues b.N requests keeping qd of them in flight; next fills in
// request i.
func runQD(b *testing.B, d Device, qd int, next func(i int, r *Request)) {
	slots := make(chan int, qd)
	for i := 0; i < qd; i++ {
		slots <- i
	}
	reqs := make([]Request, qd)
	var wg sync.WaitGroup
	var failed sync.Once
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := <-slots
		r := &reqs[s]
		*r = Request{}
		next(s, r)
		wg.Add(1)
		r.Done = func(_ int64, err error) {
			if err != nil {
				failed.Do(func() { b.Error(err) })
			}
			slots <- s
			wg.Done()
		}
		d.Submit(r)
	}
	wg.Wait()
}

func benchRandRead(b *testing.B, backend string, qd int) {
	e := openBench(b, backend, max(qd, 1))
	bufs := e.pages(b, qd)
	blocks := e.d.Size() / 4096
	rngs := make([]*rand.Rand, qd)
	for i := range rngs {
		rngs[i] = rand.New(rand.NewSource(int64(i)))
	}
	b.SetBytes(4096)
	runQD(b, e.d, qd, func(s int, r *Request) {
		r.Op, r.Off, r.Bufs = OpRead, rngs[s].Int63n(blocks)*4096, [][]byte{bufs[s]}
	})
}

func benchSeq(b *testing.B, backend string, op Op) {
	e := openBench(b, backend, 4)
	buf := e.pages(b, 256) // 1 MiB of adjacent pages: one fixed-buffer op
	chunks := e.d.Size() >> 20
	b.SetBytes(1 << 20)
	var off int64
	runQD(b, e.d, 1, func(_ int, r *Request) {
		r.Op, r.Off, r.Bufs = op, off<<20, buf
		off = (off + 1) % chunks
	})
}

func BenchmarkRandRead4KQD1Uring(b *testing.B)  { benchRandRead(b, "uring", 1) }
func BenchmarkRandRead4KQD1Sync(b *testing.B)   { benchRandRead(b, "sync", 1) }
func BenchmarkRandRead4KQD32Uring(b *testing.B) { benchRandRead(b, "uring", 32) }
func BenchmarkRandRead4KQD32Sync(b *testing.B)  { benchRandRead(b, "sync", 32) }
func BenchmarkSeqRead1MUring(b *testing.B)      { benchSeq(b, "uring", OpRead) }
func BenchmarkSeqRead1MSync(b *testing.B)       { benchSeq(b, "sync", OpRead) }
func BenchmarkSeqWrite1MUring(b *testing.B)     { benchSeq(b, "uring", OpWrite) }
func BenchmarkSeqWrite1MSync(b *testing.B)      { benchSeq(b, "sync", OpWrite) }

// benchCachedRead reads one 4 KiB block that sits in the host page cache
// through the buffered descriptor, at QD1: it measures the software path
// (submission, completion, reaper or worker wake-up, bh hop) without the
// device.
func benchCachedRead(b *testing.B, backend string) {
	q := bh.NewQueue(2)
	defer q.Close()
	d, err := Open(benchFile(b), OpenOptions{IO: backend, Queue: q, Buffered: true})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	buf := make([]byte, 4096)
	if err := ReadAt(d, buf, 0); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(4096)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := ReadAt(d, buf, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCachedRead4KQD1Uring(b *testing.B) { benchCachedRead(b, "uring") }
func BenchmarkCachedRead4KQD1Sync(b *testing.B)  { benchCachedRead(b, "sync") }

// BenchmarkScatteredRead1MUring reads 1 MiB at QD1 into 256 page-heap
// pages none of which is next to another (every other page of the pool),
// as a pagecache fill over a fragmented cache sees them.
func BenchmarkScatteredRead1MUring(b *testing.B) {
	e := openBench(b, "uring", 4)
	all := e.pages(b, 512)
	var buf [][]byte
	for i := 0; i < len(all); i += 2 {
		buf = append(buf, all[i])
	}
	chunks := e.d.Size() >> 20
	b.SetBytes(1 << 20)
	var off int64
	runQD(b, e.d, 1, func(_ int, r *Request) {
		r.Op, r.Off, r.Bufs = OpRead, off<<20, buf
		off = (off + 1) % chunks
	})
}
