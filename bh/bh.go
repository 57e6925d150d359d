// Package bh owns the bottom-half execution context: the bhqueue that
// interrupt sources (the io_uring reaper) and bottom-half code post work to,
// the small pool of workers that drain it, and merges, completions that fire
// once after N parts.
//
// Rules (docs/design.md, "Contexts and their rules"):
//   - Post never blocks and never fails: the queue is unbounded, because a
//     full queue would stall the reaper. Back-pressure belongs at submission.
//   - Completions are always delivered through the queue, never inline.
//   - Work running on a bh worker never waits for I/O.
package bh

import (
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
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

	// The interrupt doorbell (PostIRQ): an eventfd that a relay goroutine
	// reads through the Go netpoller. nil when no eventfd could be made;
	// PostIRQ then falls back to Post.
	bell      *os.File
	bellFd    int
	bellArmed atomic.Bool // the relay is (about to be) parked on the bell
	bellOne   [8]byte     // the eventfd increment, preallocated
	relayDone chan struct{}
}

// NewQueue starts a queue with the given number of workers (at least one).
func NewQueue(workers int) *Queue { return newQueue(workers, true) }

// newQueue is NewQueue; tests pass relay false to get a doorbell nobody
// answers, as when every P is busy.
func newQueue(workers int, relay bool) *Queue {
	if workers < 1 {
		workers = 1
	}
	q := &Queue{items: make([]Item, 256), bellFd: -1}
	q.wake = sync.NewCond(&q.mu)
	q.workers.Add(workers)
	for i := 0; i < workers; i++ {
		go q.work()
	}
	if fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err == nil {
		// Non-blocking, so os.NewFile registers it with the netpoller and
		// a Read parks the relay goroutine instead of blocking a thread.
		q.bellFd, q.bell = fd, os.NewFile(uintptr(fd), "bhqueue doorbell")
		q.bellOne[0] = 1 // any non-zero count wakes the reader, whatever the byte order
		q.relayDone = make(chan struct{})
		if relay {
			go q.relay()
		} else {
			close(q.relayDone)
		}
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

// PostIRQ is Post for interrupt context: a goroutine locked to its OS
// thread (an irq.Line handler), which is about to block in the kernel.
//
// Post wakes a worker through the Go scheduler, which queues the worker on
// the poster's own P (runnext). A locked thread cannot run it there, and it
// goes straight back into its blocking syscall, so the worker waits for
// another thread to steal it: a woken thread that finds the poster not yet
// in its syscall backs off with usleep(3), which the kernel's 50 us timer
// slack stretches, or sysmon retakes the P 20 us or more later. Measured at
// queue depth 1 on a 2-CPU VM, these were most of the extra latency of the
// io_uring backend over fio.
//
// PostIRQ instead rings a doorbell, an eventfd, when the relay goroutine is
// parked on it: the kernel wakes the thread blocked in the Go netpoller,
// which runs the relay right there, and the relay wakes a worker on its
// own P, where it runs next on that same thread. The write is skipped while
// the relay is awake (it re-checks the queue before parking again), so a
// busy queue costs no syscall per item. Like Post, PostIRQ allocates
// nothing unless the ring grows, and never blocks but on the leaf lock.
func (q *Queue) PostIRQ(it Item) bool {
	if q.bell == nil {
		return q.Post(it)
	}
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
	if q.bellArmed.Swap(false) {
		q.ring()
	}
	return true
}

// IRQWaiting reports whether items posted with PostIRQ may still be
// waiting for the relay: the bell rang and the relay has not answered yet.
// Interrupt context may call it (it takes only the leaf lock).
func (q *Queue) IRQWaiting() bool {
	if q.bell == nil || q.bellArmed.Load() {
		return false
	}
	return q.Len() > 0
}

// NudgeIRQ wakes a worker through the Go scheduler if PostIRQ items are
// still waiting for the relay. An interrupt source calls it when they have
// waited too long: when every P is busy, the netpoller that delivers the
// bell is polled only when a P runs out of work, or by sysmon every 10 ms
// (measured with GOMAXPROCS busy goroutines: 40 ms median from PostIRQ to
// the item running), while a worker readied on the poster's P is run within
// sysmon's 20 us retake of that P once the poster blocks in its syscall.
func (q *Queue) NudgeIRQ() {
	if q.IRQWaiting() {
		q.wake.Signal()
	}
}

func (q *Queue) ring() {
	for {
		_, err := unix.Write(q.bellFd, q.bellOne[:])
		if err != unix.EINTR {
			// EAGAIN means the counter is full: the relay has wake-ups
			// pending already.
			return
		}
	}
}

// relay turns doorbell rings into worker wake-ups from an ordinary
// goroutine. After each wake-up it arms the bell again and then looks at
// the queue, so an item posted while it was awake (when PostIRQ skipped the
// ring) is seen here: the PostIRQ either finds the bell armed and rings, or
// enqueued before this look.
func (q *Queue) relay() {
	defer close(q.relayDone)
	var buf [8]byte
	for {
		q.bellArmed.Store(true)
		q.mu.Lock()
		n, closed := q.n, q.closed
		q.mu.Unlock()
		if closed {
			return
		}
		switch {
		case n == 1:
			q.wake.Signal()
		case n > 1:
			q.wake.Broadcast()
		}
		// Items seen above have their worker; wait for the next ring. A
		// ring that came in since arming makes this return at once.
		if _, err := q.bell.Read(buf[:]); err != nil {
			return // the bell was closed
		}
	}
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
	if q.bell != nil {
		q.ring()
		<-q.relayDone
		q.bell.Close()
	}
}
