package blockdev

import (
	"sync"

	"github.com/tfsmount/tfsmount/bh"
)

// Memory is a device held in a byte slice, for tests. Requests are served
// in Submit's goroutine but completed through the bhqueue like any other
// backend.
type Memory struct {
	q        *bh.Queue
	mu       sync.RWMutex
	data     []byte
	readOnly bool
	flushes  int
}

// NewMemory returns a zero-filled memory device of size bytes.
func NewMemory(q *bh.Queue, size int64) *Memory {
	return &Memory{q: q, data: make([]byte, size)}
}

// NewMemoryOn returns a memory device holding data itself (not a copy):
// the caller gives it up.
func NewMemoryOn(q *bh.Queue, data []byte, readOnly bool) *Memory {
	return &Memory{q: q, data: data, readOnly: readOnly}
}

// NewMemoryFrom returns a memory device holding a copy of data.
func NewMemoryFrom(q *bh.Queue, data []byte, readOnly bool) *Memory {
	return &Memory{q: q, data: append([]byte(nil), data...), readOnly: readOnly}
}

func (m *Memory) Submit(r *Request) {
	if err := Check(r, int64(len(m.data)), m.readOnly); err != nil {
		complete(m.q, r, 0, err)
		return
	}
	var n int64
	switch r.Op {
	case OpRead:
		m.mu.RLock()
		for _, b := range r.Bufs {
			n += int64(copy(b, m.data[r.Off+n:]))
		}
		m.mu.RUnlock()
	case OpWrite:
		m.mu.Lock()
		for _, b := range r.Bufs {
			n += int64(copy(m.data[r.Off+n:], b))
		}
		m.mu.Unlock()
	case OpDiscard:
		m.mu.Lock()
		clear(m.data[r.Off : r.Off+r.Length])
		m.mu.Unlock()
	case OpFlush:
		m.mu.Lock()
		m.flushes++
		m.mu.Unlock()
	}
	complete(m.q, r, n, nil)
}

func (m *Memory) Size() int64     { return int64(len(m.data)) }
func (m *Memory) SectorSize() int { return 512 }
func (m *Memory) ReadOnly() bool  { return m.readOnly }
func (m *Memory) Close() error    { return nil }

// Bytes returns a copy of the device contents.
func (m *Memory) Bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.data...)
}

// Flushes counts the flush requests served.
func (m *Memory) Flushes() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.flushes
}
