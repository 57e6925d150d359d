package heap

import (
	"errors"
	"sync"
)

// PageSize is the size of one page buffer.
const PageSize = 4096

// ErrNoMemory is returned by Alloc when the budget is spent (or a test
// injected a failure). Callers drain (evict, write back) and retry, then
// make partial progress or fail; they never wait forever.
var ErrNoMemory = errors.New("page heap: out of memory")

// PoolConfig configures a PagePool.
type PoolConfig struct {
	Budget int64 // bytes of page buffers that may be in use at once
}

// PagePool hands out 4 KiB page-aligned buffers under a budget.
type PagePool struct {
	mu     sync.Mutex
	budget int
	inUse  int
	high   int
	free   [][]byte
}

// NewPagePool returns a pool with the given budget.
func NewPagePool(cfg PoolConfig) *PagePool {
	return &PagePool{budget: int(cfg.Budget / PageSize)}
}

// Alloc returns one zeroed-or-not page buffer of PageSize bytes.
func (p *PagePool) Alloc() ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inUse >= p.budget {
		return nil, ErrNoMemory
	}
	p.inUse++
	p.high = max(p.high, p.inUse)
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		return b, nil
	}
	return make([]byte, PageSize), nil
}

// Free returns a buffer obtained from Alloc.
func (p *PagePool) Free(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inUse--
	p.free = append(p.free, b[:PageSize])
}

// InUse is the number of pages handed out and not yet freed.
func (p *PagePool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inUse
}
