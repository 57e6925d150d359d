package bh

import (
	"sync"
	"sync/atomic"
)

// Done is a completion: it is called exactly once with the outcome of an
// operation (nil on success).
type Done func(err error)

// Merge is a completion that fires once after all of its parts have
// completed. It starts holding a reference of its own, so the count cannot
// reach zero while parts are still being added; Finish drops that reference.
// The final Done is always posted to the queue, never run inline, and gets
// the first error any part reported (the first is usually the cause).
type Merge struct {
	q     *Queue
	done  Done
	count atomic.Int64
	mu    sync.Mutex
	err   error
}

// NewMerge returns a merge that will post done to q.
func NewMerge(q *Queue, done Done) *Merge {
	m := &Merge{q: q, done: done}
	m.count.Store(1)
	return m
}

// Add registers one more part and returns the Done that part must call
// exactly once.
func (m *Merge) Add() Done {
	m.count.Add(1)
	return Checked("merge part", m.part)
}

func (m *Merge) part(err error) {
	if err != nil {
		m.mu.Lock()
		if m.err == nil {
			m.err = err
		}
		m.mu.Unlock()
	}
	m.release()
}

// Finish drops the merge's own reference. Call it exactly once, after the
// last Add, on every path (defer it).
func (m *Merge) Finish() { m.release() }

func (m *Merge) release() {
	switch n := m.count.Add(-1); {
	case n == 0:
		m.mu.Lock()
		err := m.err
		m.mu.Unlock()
		done := m.done
		m.q.PostFunc(func() { done(err) })
	case n < 0:
		panic("bh: merge released more times than it was added to")
	}
}
