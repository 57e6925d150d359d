package irq

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Source is one interrupt source. Wait blocks the source's OS thread until
// events arrive; Handle then runs in interrupt context and drains them.
//
// Handle's rules: record results and post preallocated items to the
// bhqueue; allocate nothing, take no lock but the queue's, call no
// callbacks. It reports how many events it handled and whether the source
// is finished (the line then stops).
type Source interface {
	Wait() error
	Handle() (events int, stop bool)
}

// Line runs one Source on a goroutine locked to its OS thread, like an
// interrupt line with its handler.
type Line struct {
	name    string
	src     Source
	done    chan struct{}
	err     error // set before done is closed
	wakeups atomic.Uint64
	events  atomic.Uint64
	once    sync.Once
}

// Stats counts a line's activity.
type Stats struct {
	Wakeups uint64 // returns from Wait
	Events  uint64 // events handled
}

// Start starts a line serving src, whose Wait blocks its thread in the
// kernel (io_uring_enter).
func Start(name string, src Source) *Line {
	l := &Line{name: name, src: src, done: make(chan struct{})}
	go l.run(true)
	return l
}

// StartPolled starts a line serving src, whose Wait waits in Go's network
// poller (a socket): the same rules for Handle, but the line's goroutine
// is not locked to a thread, since a locked goroutine that parks in the
// poller costs a hand-off between threads at every wake-up.
func StartPolled(name string, src Source) *Line {
	l := &Line{name: name, src: src, done: make(chan struct{})}
	go l.run(false)
	return l
}

func (l *Line) run(locked bool) {
	// The thread blocks in the kernel for events; locking it keeps the
	// wait and the handler on one thread, as an interrupt would be, and
	// keeps other goroutines off a thread that spends its life blocked.
	if locked {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	defer close(l.done)
	for {
		if err := l.src.Wait(); err != nil {
			l.err = err
			return
		}
		l.wakeups.Add(1)
		n, stop := l.src.Handle()
		l.events.Add(uint64(n))
		if stop {
			return
		}
	}
}

// Done is closed when the line has stopped.
func (l *Line) Done() <-chan struct{} { return l.done }

// Err is why the line stopped: nil when its source asked to stop. Valid
// after Done is closed.
func (l *Line) Err() error {
	<-l.done
	return l.err
}

// Name is the name given to Start.
func (l *Line) Name() string { return l.name }

// Stats returns the line's counters.
func (l *Line) Stats() Stats { return Stats{Wakeups: l.wakeups.Load(), Events: l.events.Load()} }
