package pagecache

import (
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
)

// faultDev wraps a device for tests: it can fail the Nth request or any
// request a predicate picks, delay completions by random amounts (which
// also reorders them), or complete inline in Submit (what a naive
// synchronous backend does). It checks that every request is completed
// exactly once.
type faultDev struct {
	blockdev.Device
	q *bh.Queue

	mu      sync.Mutex
	seen    int // requests submitted
	failNth int // 1-based ordinal of the request to fail; 0: none
	failIf  func(r *blockdev.Request) bool
	maxWait time.Duration // random completion delay up to this
	rnd     *rand.Rand
	inline  bool     // complete in Submit, on the caller's stack (a contract violation, on purpose)
	hold    bool     // keep completions until release
	held    []func() // completions kept while hold is set
	failed  int
	reads   int
	writes  int
	pending map[*blockdev.Request]bool
	doubles int
}

func newFaultDev(q *bh.Queue, d blockdev.Device) *faultDev {
	return &faultDev{Device: d, q: q, rnd: rand.New(rand.NewSource(1)), pending: map[*blockdev.Request]bool{}}
}

func (f *faultDev) Submit(r *blockdev.Request) {
	f.mu.Lock()
	f.seen++
	switch r.Op {
	case blockdev.OpRead:
		f.reads++
	case blockdev.OpWrite:
		f.writes++
	}
	fail := f.seen == f.failNth || (f.failIf != nil && f.failIf(r))
	var wait time.Duration
	if f.maxWait > 0 {
		wait = time.Duration(f.rnd.Int63n(int64(f.maxWait)))
	}
	f.pending[r] = true
	if fail {
		f.failed++
	}
	inline := f.inline
	f.mu.Unlock()

	orig := r.Done
	finish := func(n int64, err error) {
		f.mu.Lock()
		if !f.pending[r] {
			f.doubles++
		}
		delete(f.pending, r)
		f.mu.Unlock()
		orig(n, err)
	}
	// deliver hands a completion back the way the test asked for.
	deliver := func(fn func()) {
		f.mu.Lock()
		if f.hold {
			f.held = append(f.held, fn)
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		switch {
		case wait > 0:
			time.AfterFunc(wait, func() { f.q.PostFunc(fn) })
		default:
			f.q.PostFunc(fn)
		}
	}
	if fail {
		err := fmt.Errorf("%s at %d: %w", r.Op, r.Off, errInjected)
		if inline {
			finish(0, err)
			return
		}
		deliver(func() { finish(0, err) })
		return
	}
	inner := *r
	if inline {
		// Wait for the device here and complete on the submitter's
		// stack, as a naive synchronous backend would.
		type result struct {
			n   int64
			err error
		}
		ch := make(chan result, 1)
		inner.Done = func(n int64, err error) { ch <- result{n, err} }
		f.Device.Submit(&inner)
		res := <-ch
		finish(res.n, res.err)
		return
	}
	inner.Done = func(n int64, err error) { deliver(func() { finish(n, err) }) }
	f.Device.Submit(&inner)
}

// release stops holding completions and delivers the held ones.
func (f *faultDev) release() {
	f.mu.Lock()
	held := f.held
	f.held, f.hold = nil, false
	f.mu.Unlock()
	for _, fn := range held {
		f.q.PostFunc(fn)
	}
}

func (f *faultDev) set(fn func(f *faultDev)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// settle waits until no request is outstanding and checks none was
// completed twice.
func (f *faultDev) settle(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		n, d := len(f.pending), f.doubles
		f.mu.Unlock()
		if d != 0 {
			t.Fatalf("%d requests completed more than once", d)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests never completed", n)
		}
		time.Sleep(time.Millisecond)
	}
}
