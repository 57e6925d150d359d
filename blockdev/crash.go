package blockdev

import (
	"fmt"
	"math/rand"
	"sync"
)

// crashRecorder remembers what a Faulty device was asked to write and when
// flushes made it durable, to build the images a crash could leave.
//
// The rule it models: a successful flush makes durable every write that
// had completed when the flush was submitted. Any other write (completed
// later, or still in flight) may or may not be on the medium after a
// crash.
type crashRecorder struct {
	mu        sync.Mutex
	base      []byte      // device content when recording started
	writes    []recorded  // by submission sequence
	completed []int       // sequences of successful writes, in completion order
	durable   int         // completed[:durable] are durable
	flushSnap map[int]int // flush sequence -> len(completed) at its submission
}

// recorded is one write or discard as submitted (data copied at Submit,
// when the buffers already belong to the device).
type recorded struct {
	op       Op
	off      int64
	data     []byte // write payload; for a discard, nil
	length   int64  // discard length
	finished bool
}

// Record starts recording: it reads the inner device's whole content as the
// base image. Call it from a requester context (it waits for I/O), before
// the writes of interest.
func (f *Faulty) Record() error {
	base := make([]byte, f.inner.Size())
	if err := ReadAt(f.inner, base, 0); err != nil {
		return fmt.Errorf("faulty: read base image: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rec = &crashRecorder{base: base, flushSnap: map[int]int{}}
	return nil
}

func (f *Faulty) recorder() *crashRecorder {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rec
}

func (c *crashRecorder) onSubmit(r *Request) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	seq := len(c.writes)
	w := recorded{op: r.Op, off: r.Off, length: r.Length}
	switch r.Op {
	case OpWrite:
		for _, b := range r.Bufs {
			w.data = append(w.data, b...)
		}
	case OpFlush:
		c.flushSnap[seq] = len(c.completed)
	}
	c.writes = append(c.writes, w)
	return seq
}

func (c *crashRecorder) onDone(seq int, r *Request, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes[seq].finished = true
	if err != nil {
		return
	}
	switch r.Op {
	case OpWrite, OpDiscard:
		c.completed = append(c.completed, seq)
	case OpFlush:
		c.durable = max(c.durable, c.flushSnap[seq])
	}
}

// CrashImage returns a device content a crash now could leave: the base
// image with every durable write applied, then each other write (completed
// after the last covering flush, or still in flight) applied or not at
// random, in completion order. With rng nil, only durable writes are
// applied. It panics if Record was not called.
func (f *Faulty) CrashImage(rng *rand.Rand) []byte {
	c := f.recorder()
	if c == nil {
		panic("blockdev: CrashImage without Record")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	img := append([]byte(nil), c.base...)
	apply := func(w recorded) {
		if w.op == OpWrite {
			copy(img[w.off:], w.data)
		} else if w.op == OpDiscard {
			clear(img[w.off : w.off+w.length])
		}
	}
	for _, seq := range c.completed[:c.durable] {
		apply(c.writes[seq])
	}
	if rng == nil {
		return img
	}
	for _, seq := range c.completed[c.durable:] {
		if rng.Intn(2) == 0 {
			apply(c.writes[seq])
		}
	}
	for _, w := range c.writes {
		if !w.finished && rng.Intn(2) == 0 {
			apply(w)
		}
	}
	return img
}
