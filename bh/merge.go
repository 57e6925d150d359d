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
// The final Done gets the first error any part reported (the first is
// usually the cause). It is posted to the queue, never run inline in a
// submitter's context; only a part added with AddBH, which is always
// completed from bottom-half work, runs it in place when it is the last.
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

// AddBH is Add for a part whose Done is only ever called from bottom-half
// work (a device completion, or a done that runs on a bh worker). When it
// is the last part, the merge's done runs right there, on that worker,
// instead of taking another trip through the queue: the caller already is
// where the done would be posted to. A cold read then crosses the queue
// once, not once per merge of its chain.
func (m *Merge) AddBH() Done {
	m.count.Add(1)
	return Checked("merge part", m.partBH)
}

func (m *Merge) part(err error) {
	m.record(err)
	m.release(false)
}

func (m *Merge) partBH(err error) {
	m.record(err)
	m.release(true)
}

func (m *Merge) record(err error) {
	if err != nil {
		m.mu.Lock()
		if m.err == nil {
			m.err = err
		}
		m.mu.Unlock()
	}
}

// Finish drops the merge's own reference. Call it exactly once, after the
// last Add, on every path (defer it).
func (m *Merge) Finish() { m.release(false) }

func (m *Merge) release(inBH bool) {
	switch n := m.count.Add(-1); {
	case n == 0:
		m.mu.Lock()
		err := m.err
		m.mu.Unlock()
		done := m.done
		if inBH {
			done(err)
			return
		}
		m.q.PostFunc(func() { done(err) })
	case n < 0:
		panic("bh: merge released more times than it was added to")
	}
}
