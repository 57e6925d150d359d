package pagecache

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/heap"
)

// fakeBlock is the fake filesystem's allocation unit: a sector, so that
// segments need not line up with pages.
const fakeBlock = 512

// space is a tiny block allocator shared by the fake files of one test
// device: a counter, plus a capacity for ENOSPC tests.
type space struct {
	mu       sync.Mutex
	next     int64 // next free device block
	limit    int64 // device blocks available
	reserved int64 // blocks promised to reservations and not allocated yet
	// scatter allocates every other block, so runs of file blocks map to
	// many device segments.
	scatter bool
}

func (s *space) alloc() (int64, error) {
	if s.next >= s.limit {
		return 0, fmt.Errorf("fake allocator: device full: %w", syscall.ENOSPC)
	}
	b := s.next
	s.next++
	if s.scatter {
		s.next++
	}
	return b, nil
}

// fakeBacking is a Backing over a map from file block to device block. It
// follows the contract: blocks allocated by PrepareWrite become visible to
// Map only after a successful CommitWrite.
type fakeBacking struct {
	sp      *space
	mu      sync.Mutex
	blocks  map[int64]int64 // committed: file block -> device block
	pending map[int64]int64 // allocated by PrepareWrite, not committed
	reserve map[int64]bool  // reserved, not allocated

	// Fault hooks (nil: none).
	mapErr     func(off, n int64) error
	prepareErr func(off, n int64) error

	// Observations.
	commits    int
	commitErrs int
	commitLog  []string
}

func newFakeBacking(sp *space) *fakeBacking {
	return &fakeBacking{sp: sp, blocks: map[int64]int64{}, pending: map[int64]int64{}, reserve: map[int64]bool{}}
}

func (f *fakeBacking) Map(off, n int64) ([]Segment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mapErr != nil {
		if err := f.mapErr(off, n); err != nil {
			return nil, err
		}
	}
	return f.segments(off, n, f.blocks, true), nil
}

// segments maps [off, off+n) block by block through m, merging runs that
// are contiguous on the device (or holes).
func (f *fakeBacking) segments(off, n int64, m map[int64]int64, holes bool) []Segment {
	var segs []Segment
	for pos := off; pos < off+n; {
		blk := pos / fakeBlock
		k := min(off+n, (blk+1)*fakeBlock) - pos
		dev := int64(Hole)
		if d, ok := m[blk]; ok {
			dev = d*fakeBlock + pos%fakeBlock
		} else if !holes {
			panic("fake backing: unmapped block where data must go")
		}
		if l := len(segs); l > 0 {
			prev := &segs[l-1]
			if (dev == Hole && prev.Dev == Hole) || (dev != Hole && prev.Dev != Hole && prev.Dev+prev.Len == dev) {
				prev.Len += k
				pos += k
				continue
			}
		}
		segs = append(segs, Segment{Off: pos, Len: k, Dev: dev})
		pos += k
	}
	return segs
}

func (f *fakeBacking) Reserve(off, n int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sp.mu.Lock()
	defer f.sp.mu.Unlock()
	var need []int64
	for b := off / fakeBlock; b*fakeBlock < off+n; b++ {
		_, a := f.blocks[b]
		_, p := f.pending[b]
		if !a && !p && !f.reserve[b] {
			need = append(need, b)
		}
	}
	if f.sp.next+f.sp.reserved+int64(len(need)) > f.sp.limit {
		return fmt.Errorf("fake reserve of %d blocks: %w", len(need), syscall.ENOSPC)
	}
	for _, b := range need {
		f.reserve[b] = true
	}
	f.sp.reserved += int64(len(need))
	return nil
}

func (f *fakeBacking) PrepareWrite(off, n int64) ([]Segment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.prepareErr != nil {
		if err := f.prepareErr(off, n); err != nil {
			return nil, err
		}
	}
	f.sp.mu.Lock()
	for b := off / fakeBlock; b*fakeBlock < off+n; b++ {
		if _, ok := f.blocks[b]; ok {
			continue
		}
		if _, ok := f.pending[b]; ok {
			continue
		}
		d, err := f.sp.alloc()
		if err != nil {
			f.sp.mu.Unlock()
			return nil, err
		}
		if f.reserve[b] {
			delete(f.reserve, b)
			f.sp.reserved--
		}
		f.pending[b] = d
	}
	f.sp.mu.Unlock()
	merged := map[int64]int64{}
	for b := off / fakeBlock; b*fakeBlock < off+n; b++ {
		if d, ok := f.blocks[b]; ok {
			merged[b] = d
		} else {
			merged[b] = f.pending[b]
		}
	}
	return f.segments(off, n, merged, false), nil
}

func (f *fakeBacking) CommitWrite(off, n int64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.commits++
	f.commitLog = append(f.commitLog, fmt.Sprintf("[%d,%d) %v", off, off+n, err))
	if err != nil {
		f.commitErrs++
		return
	}
	for b := off / fakeBlock; b*fakeBlock < off+n; b++ {
		if d, ok := f.pending[b]; ok {
			f.blocks[b] = d
			delete(f.pending, b)
		}
	}
}

// punch forgets the blocks wholly inside [off, off+n), as a filesystem
// would before calling PunchHole.
func (f *fakeBacking) punch(off, n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for b := (off + fakeBlock - 1) / fakeBlock; (b+1)*fakeBlock <= off+n; b++ {
		delete(f.blocks, b)
		delete(f.pending, b)
	}
}

// rig is a cache over a memory device with everything a test needs.
type rig struct {
	t    testing.TB
	q    *bh.Queue
	mem  *blockdev.Memory
	dev  blockdev.Device
	pool *heap.PagePool
	c    *Cache
	sp   *space
	logs struct {
		sync.Mutex
		lines []string
	}
}

type rigOpts struct {
	devSize  int64
	budget   int64 // cache budget (0: 1 MiB)
	poolSize int64 // pool budget (0: cache budget)
	delay    time.Duration
	wrap     func(blockdev.Device, *bh.Queue) blockdev.Device
	workers  int
}

func newRig(t testing.TB, o rigOpts) *rig {
	t.Helper()
	if o.devSize == 0 {
		o.devSize = 8 << 20
	}
	if o.budget == 0 {
		o.budget = 1 << 20
	}
	if o.poolSize == 0 {
		o.poolSize = o.budget
	}
	if o.delay == 0 {
		o.delay = -1
	}
	if o.workers == 0 {
		o.workers = 2
	}
	r := &rig{t: t}
	r.q = bh.NewQueue(o.workers)
	r.mem = blockdev.NewMemory(r.q, o.devSize)
	r.dev = r.mem
	if o.wrap != nil {
		r.dev = o.wrap(r.mem, r.q)
	}
	r.pool = heap.NewPagePool(heap.PoolConfig{Budget: o.poolSize})
	r.sp = &space{next: 8, limit: o.devSize / fakeBlock}
	c, err := New(Config{Device: r.dev, Queue: r.q, Pool: r.pool, Budget: o.budget, WritebackDelay: o.delay,
		Logf: func(format string, args ...any) {
			r.logs.Lock()
			r.logs.lines = append(r.logs.lines, fmt.Sprintf(format, args...))
			r.logs.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	r.c = c
	t.Cleanup(r.close)
	return r
}

func (r *rig) close() {
	if r.c == nil {
		return
	}
	r.c.Close()
	r.c = nil
	r.q.Close()
	if err := r.pool.Close(); err != nil {
		r.t.Errorf("pool: %v", err)
	}
}

// file is a fake file: a backing plus a node plus its length.
type file struct {
	b    *fakeBacking
	n    *Node
	size int64
}

func (r *rig) newFile() *file {
	b := newFakeBacking(r.sp)
	return &file{b: b, n: r.c.NewNode(b)}
}

func (f *file) write(t testing.TB, p []byte, off int64) {
	t.Helper()
	k, err := f.n.Write(p, off, f.size)
	if err != nil || k != len(p) {
		t.Fatalf("write %d bytes at %d: %d, %v", len(p), off, k, err)
	}
	f.size = max(f.size, off+int64(len(p)))
}

func (f *file) read(t testing.TB, off, n int64) []byte {
	t.Helper()
	p := make([]byte, n)
	k, err := f.n.Read(p, off, f.size)
	if err != nil {
		t.Fatalf("read %d bytes at %d: %v", n, off, err)
	}
	return p[:k]
}

// onDisk returns the committed contents of the file's [0, size) as the
// filesystem would read them without the cache.
func (r *rig) onDisk(f *file) []byte {
	img := r.mem.Bytes()
	out := make([]byte, f.size)
	segs, _ := f.b.Map(0, f.size)
	for _, s := range segs {
		if s.Dev != Hole {
			copy(out[s.Off:s.Off+s.Len], img[s.Dev:])
		}
	}
	return out
}

// checkInvariants verifies, at quiescence, the invariants written next to
// page, Node and Cache: states and buffers agree, the LRU holds exactly
// the evictable pages, dirty sets match dirty pages, no pins or waiters
// are left, and the counters match a recount (and the pool).
func (r *rig) checkInvariants(t testing.TB) {
	t.Helper()
	c := r.c
	nodes := c.nodeList()
	// Read-ahead may still be completing: wait (boundedly) for every
	// fill and write-back to finish before looking.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		busy := 0
		st := c.lockState()
		for _, n := range nodes {
			busy += n.inflight
		}
		st.unlock()
		if busy == 0 && r.q.Len() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d pages still in flight after 10s", busy)
			break
		}
	}
	var cached, dirty int64
	lruWant := 0
	onLRU := map[*page]bool{}
	st := c.lockState()
	for p := c.lru.head.lruNext; p != &c.lru.head; p = p.lruNext {
		onLRU[p] = true
	}
	lruN := c.lru.n
	if c.inflightPages != 0 || c.wbActive.Load() != 0 {
		t.Errorf("%d pages in flight, %d write-backs active at rest", c.inflightPages, c.wbActive.Load())
	}
	for _, n := range nodes {
		if n.inflight != 0 {
			t.Errorf("node has %d pages in flight at rest", n.inflight)
		}
		for idx, p := range n.pages {
			if p.index != idx || p.detached || p.node != n {
				t.Errorf("page %d: index %d detached %v in the wrong place", idx, p.index, p.detached)
			}
			if (p.buf != nil) != (p.state != stateFree) {
				t.Errorf("page %d: state %s with buffer %v", idx, p.state, p.buf != nil)
			}
			if p.refs != 0 {
				t.Errorf("page %d: %d pins at rest", idx, p.refs)
			}
			if len(p.waiters) != 0 {
				t.Errorf("page %d: %d waiters at rest", idx, len(p.waiters))
			}
			wantLRU := p.state == stateClean || p.state == stateAlloc
			if wantLRU {
				lruWant++
			}
			if onLRU[p] != wantLRU || p.onLRU != wantLRU {
				t.Errorf("page %d: state %s, on LRU %v/%v", idx, p.state, onLRU[p], p.onLRU)
			}
			delete(onLRU, p)
			if p.state == stateDirty {
				dirty++
				if n.dirty[idx] != p {
					t.Errorf("dirty page %d missing from the dirty set", idx)
				}
			}
			if p.state == stateReading || p.state == stateWriting {
				t.Errorf("page %d: %s at rest", idx, p.state)
			}
			if p.buf != nil {
				cached++
			}
		}
		for idx, p := range n.dirty {
			if p.state != stateDirty || n.pages[idx] != p {
				t.Errorf("dirty set holds page %d in state %s", idx, p.state)
			}
		}
	}
	if len(onLRU) != 0 {
		t.Errorf("%d pages on the LRU belong to no node", len(onLRU))
	}
	if lruN != lruWant {
		t.Errorf("LRU counts %d pages, %d are clean or alloc", lruN, lruWant)
	}
	if c.cachedPages != cached || c.dirtyPages != dirty {
		t.Errorf("counters: cached %d dirty %d, recount %d %d", c.cachedPages, c.dirtyPages, cached, dirty)
	}
	st.unlock()
	if got := int64(r.pool.InUse()); got != cached {
		t.Errorf("pool has %d pages in use, cache holds %d", got, cached)
	}
	checkDirtyList(t, c, nodes)
}

// checkDirtyList checks the volume's dirty-node list: one ring through
// the sentinel, ordered by dirtySince, holding exactly the nodes that are
// marked onDirty, and (at rest) exactly the nodes with dirty pages.
func checkDirtyList(t testing.TB, c *Cache, nodes []*Node) {
	t.Helper()
	// At rest nobody else holds these: taking every node lock at once
	// bypasses the rank checker, which allows one node lock at a time.
	for _, n := range nodes {
		n.mu.Lock()
	}
	defer func() {
		for _, n := range nodes {
			n.mu.Unlock()
		}
	}()
	c.lockVolume()
	defer c.unlockVolume()
	l := &c.dirty
	seen := map[*Node]bool{}
	var prev *Node
	for n := l.head.dirtyNext; n != &l.head; n = n.dirtyNext {
		if seen[n] || len(seen) > l.n {
			t.Errorf("dirty list loops or is longer than its count %d", l.n)
			return
		}
		seen[n] = true
		if !n.onDirty {
			t.Errorf("node on the dirty list is not marked onDirty")
		}
		if n.dirtyNext.dirtyPrev != n {
			t.Errorf("dirty list links are not symmetric")
		}
		if prev != nil && n.dirtySince.Before(prev.dirtySince) {
			t.Errorf("dirty list out of order: %v after %v", n.dirtySince, prev.dirtySince)
		}
		prev = n
	}
	if len(seen) != l.n {
		t.Errorf("dirty list holds %d nodes, counts %d", len(seen), l.n)
	}
	for _, n := range nodes {
		if (len(n.dirty) > 0) != seen[n] || n.onDirty != seen[n] {
			t.Errorf("node with %d dirty pages: on list %v, onDirty %v", len(n.dirty), seen[n], n.onDirty)
		}
	}
}

var errInjected = errors.New("injected fault")
