package blockdev

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/heap"
)

var errInjected = errors.New("injected EIO")

// TestFaultySweepEveryRequestCompletesOnce fails each request of a
// scenario in turn (FailNth swept over all of them), over a real io_uring
// device with delayed, reordered completions, and checks that every
// request's Done runs exactly once, only the chosen one fails, nothing
// hangs and every page buffer is freed.
func TestFaultySweepEveryRequestCompletesOnce(t *testing.T) {
	const perRun = 40
	q := bh.NewQueue(2)
	defer q.Close()
	pool := heap.NewPagePool(heap.PoolConfig{Budget: 16 << 20})
	defer func() {
		if err := pool.Close(); err != nil {
			t.Error(err)
		}
	}()
	path, _ := imageOf(t, t.TempDir(), 1<<20)
	dev := openT(t, path, OpenOptions{IO: "uring", Queue: q, Pool: pool, Depth: 8})
	for n := 1; n <= perRun; n++ {
		f := NewFaulty(dev, q)
		f.FailNth(n, errInjected)
		f.Delay(200*time.Microsecond, int64(n))
		var wg sync.WaitGroup
		calls := make([]atomic.Int32, perRun)
		failed := make([]atomic.Bool, perRun)
		for i := 0; i < perRun; i++ {
			page, err := pool.Alloc()
			if err != nil {
				t.Fatal(err)
			}
			op := []Op{OpRead, OpWrite, OpFlush, OpDiscard}[i%4]
			r := &Request{Op: op, Off: int64(i) * 4096, Length: 4096}
			if op == OpRead || op == OpWrite {
				r.Bufs = [][]byte{page}
			}
			wg.Add(1)
			r.Done = func(_ int64, err error) {
				calls[i].Add(1)
				failed[i].Store(err != nil)
				if err != nil && !errors.Is(err, errInjected) {
					t.Errorf("request %d: unexpected error %v", i, err)
				}
				pool.Free(page)
				wg.Done()
			}
			f.Submit(r)
		}
		waitOrDump(t, &wg, "sweep completions")
		for i := 0; i < perRun; i++ {
			if c := calls[i].Load(); c != 1 {
				t.Fatalf("n=%d: request %d completed %d times", n, i, c)
			}
			if failed[i].Load() != (i == n-1) {
				t.Fatalf("n=%d: request %d failed=%v", n, i, failed[i].Load())
			}
		}
		if pool.InUse() != 0 {
			t.Fatalf("n=%d: %d pages leaked", n, pool.InUse())
		}
	}
}

func waitOrDump(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("hang waiting for %s", what)
	}
}

func TestFaultyRangeAndShort(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	data := make([]byte, 1<<16)
	for i := range data {
		data[i] = byte(i)
	}
	f := NewFaulty(NewMemoryFrom(q, data, false), q)
	f.FailRange(8192, 4096, errInjected)
	buf := make([]byte, 4096)
	if err := ReadAt(f, buf, 4096); err != nil {
		t.Fatalf("read outside the range: %v", err)
	}
	if err := ReadAt(f, buf, 10000); !errors.Is(err, errInjected) {
		t.Fatalf("read overlapping the range: %v", err)
	}
	if err := WriteAt(f, buf, 12287-4095); !errors.Is(err, errInjected) {
		t.Fatalf("write overlapping the range: %v", err)
	}
	if err := Flush(f); err != nil {
		t.Fatalf("flush is not a read or write: %v", err)
	}
	if f.Injected("range") != 2 {
		t.Fatalf("range faults %d", f.Injected("range"))
	}
	f.ClearFaults()
	if err := ReadAt(f, buf, 10000); err != nil {
		t.Fatal(err)
	}
	f.ShortNth(f.Submitted() + 1)
	err := ReadAt(f, buf, 0)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short read: %v", err)
	}
	if !bytes.Equal(buf[:2048], data[:2048]) {
		t.Fatal("short read did not move its first half")
	}
}

// TestFaultyHoldReordersCompletions holds completions and releases them
// in reverse order: the requester sees them in that order.
func TestFaultyHoldReordersCompletions(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	f := NewFaulty(NewMemory(q, 1<<16), q)
	f.Hold()
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		f.Submit(&Request{Op: OpWrite, Off: int64(i) * 512, Bufs: [][]byte{make([]byte, 512)}, Done: func(int64, error) {
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			wg.Done()
		}})
	}
	for deadline := time.Now().Add(5 * time.Second); f.Held() < 10; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d completions held", f.Held())
		}
	}
	if len(order) != 0 {
		t.Fatal("a held completion was delivered")
	}
	f.ReleaseHeld(nil)
	waitOrDump(t, &wg, "released completions")
	for i, v := range order {
		if v != 9-i {
			t.Fatalf("delivery order %v, want reversed", order)
		}
	}
}

// TestFaultyCrashImage checks the crash model: writes covered by a flush
// survive every crash; later ones survive in some crashes and not others.
func TestFaultyCrashImage(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	mem := NewMemory(q, 1<<16)
	f := NewFaulty(mem, q)
	if err := f.Record(); err != nil {
		t.Fatal(err)
	}
	a := bytes.Repeat([]byte{'a'}, 512)
	b := bytes.Repeat([]byte{'b'}, 512)
	c := bytes.Repeat([]byte{'c'}, 512)
	must(t, WriteAt(f, a, 0))
	must(t, Flush(f))
	must(t, WriteAt(f, b, 512))
	must(t, WriteAt(f, c, 0)) // overwrites a, not yet durable
	durable := f.CrashImage(nil)
	if !bytes.Equal(durable[:512], a) || !bytes.Equal(durable[512:1024], make([]byte, 512)) {
		t.Fatal("durable image is not base + flushed writes")
	}
	seen := map[string]bool{}
	rng := rand.New(rand.NewSource(3))
	for i := 0; i < 64; i++ {
		img := f.CrashImage(rng)
		seen[string(img[0:1])+string(img[512:513])] = true
		if img[0] != 'a' && img[0] != 'c' {
			t.Fatalf("crash image lost a flushed write: %q", img[0])
		}
	}
	for _, want := range []string{"a\x00", "ab", "c\x00", "cb"} {
		if !seen[want] {
			t.Fatalf("crash images %v never showed %q", seen, want)
		}
	}
	must(t, Flush(f))
	if img := f.CrashImage(nil); !bytes.Equal(img, mem.Bytes()) {
		t.Fatal("after a second flush the durable image differs from the device")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestSlice(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	mem := NewMemory(q, 1<<16)
	s := NewSlice(mem, 4096, 8192)
	if s.Size() != 8192 || Describe(s) == "" {
		t.Fatal(s.Size())
	}
	must(t, WriteAt(s, []byte("hello"), 10))
	if got := mem.Bytes()[4096+10 : 4096+15]; string(got) != "hello" {
		t.Fatalf("slice write landed wrong: %q", got)
	}
	buf := make([]byte, 5)
	must(t, ReadAt(s, buf, 10))
	if string(buf) != "hello" {
		t.Fatal(string(buf))
	}
	if err := ReadAt(s, make([]byte, 10), 8190); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("read past the slice: %v", err)
	}
	if err := Discard(s, 8000, 1000); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("discard past the slice: %v", err)
	}
	must(t, Flush(s))
	must(t, Discard(s, 0, 512))
	defer func() {
		if recover() == nil {
			t.Fatal("slice outside the device accepted")
		}
	}()
	NewSlice(mem, 1<<16-10, 11)
}

// TestCrashWalker checks the crash model the simulator builds on: a FUA
// write is durable when it completes and makes nothing else durable; a
// flush covers exactly the writes completed before it was submitted; at a
// point just before a completion, that write is still pending; kept writes
// overlay the durable image whole or by sector; discards keep old data.
func TestCrashWalker(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	mem := NewMemory(q, 1<<16)
	f := NewFaulty(mem, q)
	must(t, f.Record())
	sec := func(c byte, n int) []byte { return bytes.Repeat([]byte{c}, 512*n) }
	must(t, WriteAt(f, sec('a', 2), 0))       // ops 0: durable after the flush
	must(t, Flush(f))                         // 1
	must(t, WriteAt(f, sec('b', 1), 1024))    // 2: never flushed
	must(t, WriteAtFUA(f, sec('c', 1), 2048)) // 3: durable by itself
	must(t, Discard(f, 0, 512))               // 4: keeps 'a' in crash images
	must(t, WriteAt(f, sec('d', 3), 4096))    // 5: pending, three sectors
	r := f.Recording()
	pts := r.CrashPoints()
	if len(pts) != 3 || pts[2] != r.Events() {
		t.Fatalf("crash points %v (events %d): want the flush, the FUA write and the end", pts, r.Events())
	}
	w := r.Walker()
	// Just before the flush completes: nothing is durable, 'a' pending.
	w.Advance(pts[0])
	if p := w.Pending(); len(p) != 1 || p[0].Off != 0 || p[0].Sectors != 2 {
		t.Fatalf("pending before the flush: %+v", p)
	}
	if img := w.Image(nil); !bytes.Equal(img[:1024], make([]byte, 1024)) {
		t.Fatal("a write not yet flushed is in the durable image")
	}
	// Just before the FUA write completes: 'a' durable, 'b' and 'c' pending.
	w.Advance(pts[1])
	if img := w.Image(nil); !bytes.Equal(img[:1024], sec('a', 2)) || img[2048] != 0 {
		t.Fatal("durable image before the FUA write completed")
	}
	if p := w.Pending(); len(p) != 2 {
		t.Fatalf("pending before the FUA write completed: %+v", p)
	}
	// The end: 'c' durable; 'b', the discard and 'd' pending.
	w.Advance(pts[2])
	img := w.Image(nil)
	if img[2048] != 'c' || img[1024] != 0 || img[0] != 'a' {
		t.Fatal("durable image at the end")
	}
	p := w.Pending()
	if len(p) != 3 || !p[1].Discard || p[2].Sectors != 3 {
		t.Fatalf("pending at the end: %+v", p)
	}
	kept := []Kept{{Index: p[1].Index}, {Index: p[2].Index, Sectors: []bool{true, false, true}}}
	img = w.Image(kept)
	dev := w.Device(q, kept)
	viaDev := make([]byte, len(img))
	must(t, ReadAt(dev, viaDev, 0))
	if !bytes.Equal(img, viaDev) {
		t.Fatal("Device and Image differ")
	}
	if img[0] != 'a' {
		t.Fatal("a discard cleared data in a crash image")
	}
	if img[4096] != 'd' || img[4096+512] != 0 || img[4096+1024] != 'd' {
		t.Fatal("a torn write kept the wrong sectors")
	}
}

// TestRecordingSaveLoad: a recording saved and loaded over its base image
// builds the same crash images.
func TestRecordingSaveLoad(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	mem := NewMemory(q, 1<<16)
	f := NewFaulty(mem, q)
	must(t, f.Record())
	must(t, WriteAt(f, bytes.Repeat([]byte{'a'}, 1024), 0))
	must(t, Flush(f))
	must(t, WriteAtFUA(f, bytes.Repeat([]byte{'b'}, 512), 4096))
	must(t, WriteAt(f, bytes.Repeat([]byte{'c'}, 1536), 8192))
	r := f.Recording()
	var buf bytes.Buffer
	must(t, r.Save(&buf))
	loaded, err := LoadRecording(&buf, make([]byte, 1<<16))
	must(t, err)
	if loaded.Events() != r.Events() || len(loaded.CrashPoints()) != len(r.CrashPoints()) {
		t.Fatalf("loaded %d events, %d points; saved %d, %d", loaded.Events(), len(loaded.CrashPoints()), r.Events(), len(r.CrashPoints()))
	}
	a, b := r.Walker(), loaded.Walker()
	for _, at := range r.CrashPoints() {
		a.Advance(at)
		b.Advance(at)
		var kept []Kept
		for _, p := range a.Pending() {
			kept = append(kept, Kept{Index: p.Index})
		}
		if !bytes.Equal(a.Image(nil), b.Image(nil)) || !bytes.Equal(a.Image(kept), b.Image(kept)) {
			t.Fatalf("crash images differ at %d", at)
		}
	}
	if _, err := LoadRecording(bytes.NewReader(nil), nil); err == nil {
		t.Fatal("an empty recording loaded")
	}
}
