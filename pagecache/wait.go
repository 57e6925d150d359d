package pagecache

import (
	"github.com/tfsmount/tfsmount/bh"
)

// opWait is how a goroutine that may block waits for several page events
// and I/O: every event holds a part of the merge, and the merge's done
// (posted through the bhqueue, never run inline) wakes the goroutine.
type opWait struct {
	m  *bh.Merge
	ch chan error
}

func (c *Cache) newWait() *opWait {
	w := &opWait{ch: make(chan error, 1)}
	w.m = bh.NewMerge(c.q, func(err error) { w.ch <- err })
	return w
}

// lazyWait returns w, or a new wait if w is nil.
func (c *Cache) lazyWait(w *opWait) *opWait {
	if w == nil {
		w = c.newWait()
	}
	return w
}

// wait drops the merge's own reference and waits for every part. It must
// be called exactly once, with no cache lock held.
func (w *opWait) wait() error {
	assertNoLocksHeld("waiting for I/O")
	w.m.Finish()
	return <-w.ch
}

// runWaiters calls the collected waiters of a page after the state lock was
// released. Waiters are merge parts: calling one only counts down, and the
// merge posts its done to the bhqueue.
func runWaiters(ws []bh.Done, err error) {
	for _, w := range ws {
		w(err)
	}
}
