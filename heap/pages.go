package heap

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"
)

// PageSize is the size of one page buffer.
const PageSize = 4096

// SlabSize is the size of the slabs pages are carved from. Slabs are
// SlabSize-aligned, so a buffer's slab is found by masking its address.
const SlabSize = 2 << 20

const pagesPerSlab = SlabSize / PageSize

// ErrNoMemory is returned by Alloc when the budget is spent (or a test
// injected a failure). Callers drain (evict, write back) and retry, then
// make partial progress or fail; they never wait forever.
var ErrNoMemory = errors.New("page heap: out of memory")

// PoolConfig configures a PagePool.
type PoolConfig struct {
	Budget int64 // bytes of page buffers that may be in use at once
	// KeepIdle is how many slabs with no page in use stay mapped for reuse
	// (default 1); the others go back to the OS as soon as they empty.
	KeepIdle int
}

// PagePool hands out 4 KiB page-aligned buffers under a budget. The pages
// come from 2 MiB slabs mapped outside the Go heap (in the tfsdebug build,
// from Go memory so the race detector sees them), which never move, suit
// O_DIRECT and can be registered with io_uring.
//
// Invariants (checked by checkLocked in tests): inUse == sum of slab.used;
// inUse <= budget; a page is in its slab's free list iff its bit in
// slab.allocated is clear; a mapped slab with used == 0 counts in idle.
type PagePool struct {
	mu        sync.Mutex
	budget    int // pages
	keepIdle  int
	inUse     int
	high      int
	idle      int              // mapped slabs with no page in use
	last      int              // slab of the last allocation (a hint)
	slabs     []*slab          // by index; nil where no slab is mapped
	byBase    map[uintptr]int  // slab base address -> index
	watchers  map[int]SlabFunc // by watch id
	nextID    int
	fail      failer
	closed    bool
	spare     [][]byte // mapped, populated slabs not yet in use (pages_spare.go)
	preparing bool     // a goroutine is making a spare
}

type slab struct {
	mem       []byte
	free      []uint16 // free page numbers, popped from the end
	allocated [pagesPerSlab / 64]uint64
	used      int
	owner     slabOwner // release-build: nothing; tfsdebug: allocation sites
}

// SlabFunc is told when slab idx is mapped (mem is the slab) or is about
// to be unmapped (mem is nil). It runs with the pool locked: it must not
// call back into the pool.
type SlabFunc func(idx int, mem []byte)

// NewPagePool returns a pool with the given budget.
func NewPagePool(cfg PoolConfig) *PagePool {
	budget := int(max(cfg.Budget, 0) / PageSize)
	keep := cfg.KeepIdle
	if keep <= 0 {
		keep = 1
	}
	return &PagePool{
		budget:   budget,
		keepIdle: keep,
		slabs:    make([]*slab, max(1, (budget+pagesPerSlab-1)/pagesPerSlab)),
		byBase:   map[uintptr]int{},
		watchers: map[int]SlabFunc{},
		fail:     failer{after: -1},
	}
}

// Alloc returns one page buffer of PageSize bytes, not zeroed.
func (p *PagePool) Alloc() ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.allocLocked()
}

// AllocN appends up to k page buffers to bufs under one hold of the lock,
// as k calls of Alloc would: it stops at the first refusal, and returns
// that error only if it added no buffer.
func (p *PagePool) AllocN(bufs [][]byte, k int) ([][]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	had := len(bufs)
	for i := 0; i < k; i++ {
		b, err := p.allocLocked()
		if err != nil {
			if len(bufs) == had {
				return bufs, err
			}
			break
		}
		bufs = append(bufs, b)
	}
	return bufs, nil
}

// allocLocked is Alloc with p.mu held.
func (p *PagePool) allocLocked() ([]byte, error) {
	if p.closed || p.inUse >= p.budget || p.fail.trip() {
		return nil, ErrNoMemory
	}
	s, err := p.slabWithRoom()
	if err != nil {
		return nil, err
	}
	pg := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	s.allocated[pg/64] |= 1 << (pg % 64)
	if s.used == 0 {
		p.idle--
	}
	s.used++
	p.inUse++
	p.high = max(p.high, p.inUse)
	s.owner.allocated(int(pg))
	off := int(pg) * PageSize
	return s.mem[off : off+PageSize : off+PageSize], nil
}

// slabWithRoom finds a mapped slab with a free page, preferring ones in
// use so that idle slabs can go back to the OS, or maps a new one.
func (p *PagePool) slabWithRoom() (*slab, error) {
	// The slab of the last allocation usually has room: O(1) in the
	// common case, a scan only when it fills up.
	if s := p.slabs[p.last]; s != nil && len(s.free) > 0 {
		return s, nil
	}
	var idle *slab
	idleAt := 0
	for i, s := range p.slabs {
		if s != nil && len(s.free) > 0 {
			if s.used > 0 {
				p.last = i
				return s, nil
			}
			if idle == nil {
				idle, idleAt = s, i
			}
		}
	}
	if idle != nil {
		p.last = idleAt
		return idle, nil
	}
	for i, s := range p.slabs {
		if s == nil {
			p.last = i
			return p.mapSlab(i)
		}
	}
	// Cannot happen while inUse <= budget: every mapped slab is full, so
	// len(slabs)*pagesPerSlab pages are in use, which is at least budget.
	return nil, ErrNoMemory
}

func (p *PagePool) mapSlab(i int) (*slab, error) {
	mem := p.takeSpare()
	if mem == nil {
		var err error
		if mem, err = slabMap(); err != nil {
			return nil, fmt.Errorf("%w: map a %d-byte slab: %v", ErrNoMemory, SlabSize, err)
		}
	}
	s := &slab{mem: mem, free: make([]uint16, pagesPerSlab)}
	for j := range s.free {
		// Popping from the end hands out pages in ascending order, so
		// consecutive allocations are adjacent in memory.
		s.free[j] = uint16(pagesPerSlab - 1 - j)
	}
	p.slabs[i] = s
	p.byBase[base(mem)] = i
	p.idle++
	for _, w := range p.watchers {
		w(i, mem)
	}
	p.startSpare()
	return s, nil
}

func (p *PagePool) unmapSlab(i int) {
	s := p.slabs[i]
	for _, w := range p.watchers {
		w(i, nil)
	}
	delete(p.byBase, base(s.mem))
	p.slabs[i] = nil
	p.idle--
	slabUnmap(s.mem)
}

// Free returns a buffer obtained from Alloc. Freeing anything else, or
// freeing twice, is a bug and panics.
func (p *PagePool) Free(b []byte) {
	if cap(b) < PageSize {
		panic(fmt.Sprintf("page heap: Free of a %d-byte buffer, not a page", cap(b)))
	}
	addr := uintptr(unsafe.Pointer(&b[:1][0]))
	p.mu.Lock()
	defer p.mu.Unlock()
	i, ok := p.byBase[addr&^(SlabSize-1)]
	if !ok || addr%PageSize != 0 {
		panic(fmt.Sprintf("page heap: Free of %#x, which is not a page of this pool", addr))
	}
	s := p.slabs[i]
	pg := uint16((addr - base(s.mem)) / PageSize)
	if s.allocated[pg/64]&(1<<(pg%64)) == 0 {
		panic(fmt.Sprintf("page heap: double free of page %d of slab %d (%#x)", pg, i, addr))
	}
	s.allocated[pg/64] &^= 1 << (pg % 64)
	s.owner.freed(int(pg), s.mem[int(pg)*PageSize:int(pg+1)*PageSize])
	s.free = append(s.free, pg)
	s.used--
	p.inUse--
	if s.used == 0 {
		p.idle++
		if p.idle > p.keepIdle || p.closed {
			p.unmapSlab(i)
		}
	}
}

// InUse is the number of pages handed out and not yet freed.
func (p *PagePool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inUse
}

// HighWater is the largest InUse seen.
func (p *PagePool) HighWater() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.high
}

// Budget is the number of pages that may be in use at once.
func (p *PagePool) Budget() int { return p.budget }

// MappedSlabs is the number of slabs currently mapped.
func (p *PagePool) MappedSlabs() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, s := range p.slabs {
		if s != nil {
			n++
		}
	}
	return n
}

// Trim returns every slab with no page in use to the OS (a drain under
// memory pressure).
func (p *PagePool) Trim() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, s := range p.slabs {
		if s != nil && s.used == 0 {
			p.unmapSlab(i)
		}
	}
	p.dropSpare()
}

// MaxSlabs is the most slabs the pool can ever map at once, which is the
// size of a registration table covering all of them.
func (p *PagePool) MaxSlabs() int { return len(p.slabs) }

// Slabs returns the mapped slabs by index (nil where none is mapped).
func (p *PagePool) Slabs() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([][]byte, len(p.slabs))
	for i, s := range p.slabs {
		if s != nil {
			out[i] = s.mem
		}
	}
	return out
}

// SlabIndex is the index of the slab holding b, if b is pool memory.
func (p *PagePool) SlabIndex(b []byte) (int, bool) {
	if cap(b) == 0 {
		return 0, false
	}
	addr := uintptr(unsafe.Pointer(&b[:1][0]))
	p.mu.Lock()
	defer p.mu.Unlock()
	i, ok := p.byBase[addr&^(SlabSize-1)]
	return i, ok
}

// Watch calls fn for every slab mapped now and every later map and unmap,
// until the returned cancel function is called.
func (p *PagePool) Watch(fn SlabFunc) (cancel func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := p.nextID
	p.nextID++
	p.watchers[id] = fn
	for i, s := range p.slabs {
		if s != nil {
			fn(i, s.mem)
		}
	}
	return func() {
		p.mu.Lock()
		delete(p.watchers, id)
		p.mu.Unlock()
	}
}

// Close unmaps every slab and reports pages still allocated (leaks). Alloc
// fails after Close. Slabs holding leaked pages stay mapped, so a late user
// of a leaked page reads stale memory instead of faulting; Free of such a
// page is still accepted.
func (p *PagePool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.dropSpare()
	var leaks []string
	for i, s := range p.slabs {
		if s == nil {
			continue
		}
		if s.used > 0 {
			leaks = append(leaks, s.owner.report(i, s.used, &s.allocated))
			continue
		}
		p.unmapSlab(i)
	}
	if p.inUse > 0 {
		return fmt.Errorf("page heap: %d pages leaked: %v", p.inUse, leaks)
	}
	return nil
}

func base(mem []byte) uintptr { return uintptr(unsafe.Pointer(&mem[0])) }

// failer injects allocation failures for tests.
type failer struct {
	after int         // successful allocations left before failing; -1 = off
	hook  func() bool // if set, true fails the allocation
}

func (f *failer) trip() bool {
	if f.hook != nil && f.hook() {
		return true
	}
	switch {
	case f.after < 0:
		return false
	case f.after == 0:
		return true
	}
	f.after--
	return false
}

// FailAfter makes Alloc fail with ErrNoMemory after n more successful
// allocations, until FailAfter(-1). FailAfter(0) fails the next one.
func (p *PagePool) FailAfter(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail.after = n
}

// FailWhen installs a hook consulted by every Alloc (nil removes it); when
// it returns true, Alloc fails with ErrNoMemory. It runs with the pool
// locked and must not call back into the pool.
func (p *PagePool) FailWhen(hook func() bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail.hook = hook
}

func leakSummary(slab, used int, allocated *[pagesPerSlab / 64]uint64) string {
	first := -1
	for w, bits := range allocated {
		for b := 0; b < 64 && bits != 0; b++ {
			if bits&(1<<b) != 0 {
				first = w*64 + b
				break
			}
		}
		if first >= 0 {
			break
		}
	}
	return fmt.Sprintf("slab %d: %d pages (first: page %d)", slab, used, first)
}
