// Package bh owns the bottom-half execution context: the bhqueue that
// interrupt sources (the io_uring reaper) and bottom-half code post work to,
// the small pool of workers that drain it, and merges, completions that fire
// once after N parts.
//
// Rules (docs/architecture.md, "Bottom half: bh workers"):
//   - Post never blocks and never fails: the queue is unbounded, because a
//     full queue would stall the reaper. Back-pressure belongs at submission.
//   - Completions are always delivered through the queue, never inline.
//   - Work running on a bh worker never waits for I/O.
package bh

import (
	"sync"
)

// Item is one unit of bottom-half work. Posting a pointer to a preallocated
// struct that implements Item does not allocate, which is what the
// interrupt path needs.
type Item interface {
	RunBH()
}

// Func adapts a plain function to Item. A func value is pointer-shaped, so
// converting it to an Item does not allocate either.
type Func func()

// RunBH runs f.
func (f Func) RunBH() { f() }

// Queue is the bhqueue: an unbounded multi-producer queue drained by a fixed
// pool of workers.
//
// Invariant: items run in the order they were posted when there is one
// worker; with several workers they start in order but may run concurrently.
type Queue struct {
	mu      sync.Mutex
	items   []Item // ring buffer; grows when full, never shrinks
	head    int    // index of the oldest item
	n       int    // number of queued items
	closed  bool
	wake    *sync.Cond
	workers sync.WaitGroup
}

// NewQueue starts a queue with the given number of workers (at least one).
func NewQueue(workers int) *Queue {
	if workers < 1 {
		workers = 1
	}
	q := &Queue{items: make([]Item, 256)}
	q.wake = sync.NewCond(&q.mu)
	q.workers.Add(workers)
	for i := 0; i < workers; i++ {
		go q.work()
	}
	return q
}

// Post appends it to the queue. It never blocks for long (only on the
// queue's leaf lock) and allocates only when the ring has to grow.
// Posting to a closed queue runs nothing and reports false.
func (q *Queue) Post(it Item) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	if q.n == len(q.items) {
		q.grow()
	}
	q.items[(q.head+q.n)%len(q.items)] = it
	q.n++
	q.mu.Unlock()
	q.wake.Signal()
	return true
}

// PostFunc is Post(Func(f)).
func (q *Queue) PostFunc(f func()) bool { return q.Post(Func(f)) }

func (q *Queue) grow() {
	bigger := make([]Item, 2*len(q.items))
	for i := 0; i < q.n; i++ {
		bigger[i] = q.items[(q.head+i)%len(q.items)]
	}
	q.items = bigger
	q.head = 0
}

// Len is the number of items waiting to run.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

func (q *Queue) work() {
	defer q.workers.Done()
	for {
		q.mu.Lock()
		for q.n == 0 && !q.closed {
			q.wake.Wait()
		}
		if q.n == 0 && q.closed {
			q.mu.Unlock()
			return
		}
		it := q.items[q.head]
		q.items[q.head] = nil
		q.head = (q.head + 1) % len(q.items)
		q.n--
		q.mu.Unlock()
		it.RunBH()
	}
}

// Close runs everything already queued, then stops the workers. Items
// posted by those items still run; posts after the queue drained are
// refused.
func (q *Queue) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.wake.Broadcast()
	q.workers.Wait()
}
