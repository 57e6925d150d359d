package blockdev

import (
	"fmt"
	"math/rand"
	"sync"
	"time"

	"github.com/tfsmount/tfsmount/bh"
)

// Faulty wraps a device and injects faults, for tests of the layers above:
// fail the Nth request, fail requests touching a byte range, cut transfers
// short, delay or hold completions and release them out of order, and
// record writes and flushes so that a crash can be simulated (CrashImage).
//
// Every completion still reaches the requester exactly once, through the
// bhqueue.
type Faulty struct {
	inner Device
	q     *bh.Queue

	mu       sync.Mutex
	seen     int            // requests submitted so far
	failNth  map[int]error  // 1-based request number -> error
	shortNth map[int]bool   // 1-based request number -> transfer half
	ranges   []faultRange   // failing byte ranges
	delay    time.Duration  // max random completion delay (0 = none)
	rng      *rand.Rand     // for delays; guarded by mu
	holding  bool           // completions are held until ReleaseHeld
	held     []func()       // held deliveries
	rec      *crashRecorder // nil unless Record was called
	injected map[string]int // fault kind -> count, for test assertions
}

type faultRange struct {
	off, end int64
	ops      map[Op]bool
	err      error
}

// NewFaulty wraps inner; completions are delivered to q.
func NewFaulty(inner Device, q *bh.Queue) *Faulty {
	return &Faulty{inner: inner, q: q, failNth: map[int]error{}, shortNth: map[int]bool{},
		rng: rand.New(rand.NewSource(1)), injected: map[string]int{}}
}

// FailNth fails the nth request from the start (1-based, counting every
// Submit) with err, without passing it to the inner device.
func (f *Faulty) FailNth(n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNth[n] = err
}

// FailRange fails every request of the given ops (reads and writes if none
// given) that overlaps [off, off+n), with err.
func (f *Faulty) FailRange(off, n int64, err error, ops ...Op) {
	if len(ops) == 0 {
		ops = []Op{OpRead, OpWrite}
	}
	fr := faultRange{off: off, end: off + n, ops: map[Op]bool{}, err: err}
	for _, op := range ops {
		fr.ops[op] = true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ranges = append(f.ranges, fr)
}

// ClearFaults removes every FailNth, FailRange and ShortNth rule.
func (f *Faulty) ClearFaults() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNth, f.shortNth, f.ranges = map[int]error{}, map[int]bool{}, nil
}

// ShortNth makes the nth read or write move only the first half of its
// bytes (rounded down to a sector, at least one byte short) and report that
// count with no error: a device that ended early.
func (f *Faulty) ShortNth(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shortNth[n] = true
}

// Delay delays each completion by a random time up to max, which also
// reorders completions of requests in flight together. Seed fixes the
// random choices.
func (f *Faulty) Delay(max time.Duration, seed int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay, f.rng = max, rand.New(rand.NewSource(seed))
}

// Hold keeps every completion from now on until ReleaseHeld.
func (f *Faulty) Hold() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holding = true
}

// Held is the number of completions being held.
func (f *Faulty) Held() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.held)
}

// ReleaseHeld stops holding and delivers the held completions in an order
// shuffled by rng, or in reverse submission order if rng is nil.
func (f *Faulty) ReleaseHeld(rng *rand.Rand) {
	f.mu.Lock()
	held := f.held
	f.held, f.holding = nil, false
	f.mu.Unlock()
	if rng != nil {
		rng.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
	} else {
		for i, j := 0, len(held)-1; i < j; i, j = i+1, j-1 {
			held[i], held[j] = held[j], held[i]
		}
	}
	for _, deliver := range held {
		f.q.PostFunc(deliver)
	}
}

// Submitted is the number of requests submitted so far; FailNth and
// ShortNth count the same way.
func (f *Faulty) Submitted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen
}

// Injected counts the faults injected so far by kind ("fail", "range",
// "short").
func (f *Faulty) Injected(kind string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.injected[kind]
}

// Submit applies the fault rules to r and passes it on.
func (f *Faulty) Submit(r *Request) {
	f.mu.Lock()
	f.seen++
	nth := f.seen
	var err error
	if e, ok := f.failNth[nth]; ok {
		err = e
		f.injected["fail"]++
	} else if e := f.rangeFault(r); e != nil {
		err = e
		f.injected["range"]++
	}
	short := err == nil && f.shortNth[nth] && (r.Op == OpRead || r.Op == OpWrite) && r.Len() > 0
	if short {
		f.injected["short"]++
	}
	f.mu.Unlock()

	done := r.Done
	if err != nil {
		f.deliver(func() { done(0, fmt.Errorf("injected fault on %s request #%d at %d: %w", r.Op, nth, r.Off, err)) })
		return
	}
	inner := &Request{Op: r.Op, Off: r.Off, Bufs: r.Bufs, Length: r.Length, FUA: r.FUA}
	if short {
		keep := max(r.Len()/2/512*512, 0)
		if keep == r.Len() {
			keep = r.Len() - 1
		}
		inner.Bufs = truncateBufs(r.Bufs, keep)
	}
	rec := f.recorder()
	var seq int
	if rec != nil {
		seq = rec.onSubmit(inner)
	}
	inner.Done = func(n int64, err error) {
		if rec != nil {
			rec.onDone(seq, err)
		}
		f.deliver(func() { done(n, err) })
	}
	f.inner.Submit(inner)
}

func (f *Faulty) rangeFault(r *Request) error {
	end := r.Off + r.Len()
	if r.Op == OpDiscard {
		end = r.Off + r.Length
	}
	for _, fr := range f.ranges {
		if fr.ops[r.Op] && r.Off < fr.end && end > fr.off {
			return fr.err
		}
	}
	return nil
}

// deliver runs a completion through the queue, after the configured
// delay, or holds it.
func (f *Faulty) deliver(fn func()) {
	f.mu.Lock()
	if f.holding {
		f.held = append(f.held, fn)
		f.mu.Unlock()
		return
	}
	var d time.Duration
	if f.delay > 0 {
		d = time.Duration(f.rng.Int63n(int64(f.delay) + 1))
	}
	f.mu.Unlock()
	if d == 0 {
		f.q.PostFunc(fn)
		return
	}
	time.AfterFunc(d, func() { f.q.PostFunc(fn) })
}

func truncateBufs(bufs [][]byte, n int64) [][]byte {
	var out [][]byte
	for _, b := range bufs {
		if n <= 0 {
			break
		}
		k := min(int64(len(b)), n)
		out = append(out, b[:k])
		n -= k
	}
	return out
}

func (f *Faulty) Size() int64     { return f.inner.Size() }
func (f *Faulty) SectorSize() int { return f.inner.SectorSize() }
func (f *Faulty) ReadOnly() bool  { return f.inner.ReadOnly() }

// Close closes the inner device. Held completions are delivered first so
// that nothing waits forever.
func (f *Faulty) Close() error {
	f.ReleaseHeld(nil)
	return f.inner.Close()
}

func (f *Faulty) describe() string { return "faulty over " + Describe(f.inner) }

// Stats returns the inner device's counters, if it keeps any.
func (f *Faulty) Stats() StatsSnapshot {
	s, _ := DeviceStats(f.inner)
	return s
}
