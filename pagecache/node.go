package pagecache

import (
	"sync"
)

// Node is the cached data of one file: its page index, its dirty set and
// its write-back lock. Lock order: wb, then mu, then the cache's state (or
// volume) lock; see lockorder.go.
//
// Calling rules for the filesystem: Read, Write, Sync, Truncate and
// PunchHole may wait for I/O and call Backing methods (Read, Write and Sync
// do), so they must not be called with the filesystem's metadata mutex
// held. Drop and Dirty never wait and never call Backing. PrepareWrite and
// CommitWrite run with the node's write-back lock held, so a Backing must
// not call back into the cache from them (a Write there could need memory,
// and making room can write back the same node).
//
// Invariants, checked in tests (checkInvariants):
//   - pages[i].index == i and the page is not detached;
//   - dirty holds exactly the pages of pages in state dirty, except while a
//     write-back that failed is putting its pages back (under wb);
//   - inflight counts pages of this node (detached ones included) in state
//     reading or writing.
type Node struct {
	c *Cache
	b Backing

	// wb serialises write-back of this node (docs/architecture.md,
	// "Lock order"): it is held from collecting dirty pages until
	// CommitWrite has returned, so a Sync that starts after another
	// write-back waits for it.
	wb sync.Mutex

	mu sync.RWMutex // the node lock; RLock only to copy out of pinned pages
	// Guarded by mu.
	pages   map[int64]*page
	dirty   map[int64]*page
	size    int64 // file length: set by Truncate, raised by reads and writes
	wbErr   error // sticky write-back error, reported by the next Sync
	dropped bool
	// Sequential read detection for read-ahead, one entry per reader
	// streaming through the file (readahead.go).
	streams [raStreams]raStream
	raClock uint64 // ticks once per read, to find the least recently used stream

	// Guarded by the cache's state lock.
	inflight int

	// Guarded by the cache's volMu.
	dirtyLinks
}

// NewNode returns the cache of one file whose bytes b locates.
func (c *Cache) NewNode(b Backing) *Node {
	n := &Node{c: c, b: b, pages: map[int64]*page{}, dirty: map[int64]*page{}}
	c.lockVolume()
	c.nodes[n] = struct{}{}
	c.unlockVolume()
	return n
}

func (n *Node) lock() {
	lockAcquire(rankNode)
	n.mu.Lock()
}

func (n *Node) unlock() {
	n.mu.Unlock()
	lockRelease(rankNode)
}

func (n *Node) rlock() {
	lockAcquire(rankNode)
	n.mu.RLock()
}

func (n *Node) runlock() {
	n.mu.RUnlock()
	lockRelease(rankNode)
}

func (n *Node) lockWB() {
	lockAcquire(rankWriteback)
	n.wb.Lock()
}

func (n *Node) unlockWB() {
	n.wb.Unlock()
	lockRelease(rankWriteback)
}

// Dirty reports whether the node has data not yet written back (dirty
// pages or a write-back in flight).
func (n *Node) Dirty() bool {
	n.lock()
	defer n.unlock()
	if len(n.dirty) > 0 {
		return true
	}
	st := n.c.lockState()
	defer st.unlock()
	return n.inflight > 0
}

// Sync writes back this node's dirty pages, waits until the filesystem has
// been told (CommitWrite), and returns the sticky write-back error, if
// any, clearing it. Pages that failed stay dirty for the next attempt.
// It does not flush the device: durability needs the filesystem to log
// the new extents and then issue a flush.
func (n *Node) Sync() error {
	n.writeback()
	n.lock()
	err := n.wbErr
	n.wbErr = nil
	n.unlock()
	return err
}

// Truncate tells the cache the file is now size bytes long: pages wholly
// past size are dropped (dirty ones discarded) and the tail of the last
// partial page is zeroed (a dirty page stays dirty). It waits for a
// write-back in progress, so no CommitWrite for the dropped bytes arrives
// after it returns.
func (n *Node) Truncate(size int64) {
	if size < 0 {
		size = 0
	}
	n.lockWB()
	defer n.unlockWB()
	n.lock()
	n.size = size
	n.unlock()
	n.zeroRange(size, -1)
}

// PunchHole zeroes the cached bytes of [off, off+length): whole pages are
// dropped (dirty ones discarded), partial ones zeroed in place. The caller
// updates the Backing first, so a later fill reads the hole. Like Truncate,
// it waits for a write-back in progress.
func (n *Node) PunchHole(off, length int64) {
	if length <= 0 || off < 0 {
		return
	}
	n.lockWB()
	defer n.unlockWB()
	n.zeroRange(off, off+length)
}

// zeroRange drops the pages wholly inside [from, to) and zeroes the parts
// of the pages at either end that fall inside it (to < 0 means "to the end
// of the file"). A partial page being written back is waited for; one
// being filled is detached, so the next read fills it again.
func (n *Node) zeroRange(from, to int64) {
	for {
		w := n.zeroRangeOnce(from, to)
		if w == nil {
			return
		}
		w.wait()
	}
}

func (n *Node) zeroRangeOnce(from, to int64) *opWait {
	n.lock()
	defer n.unlock()
	st := n.c.lockState()
	w := n.zeroPagesLocked(st, from, to)
	st.unlock()
	if len(n.dirty) == 0 {
		n.c.markClean(n)
	}
	return w
}

func (n *Node) zeroPagesLocked(st *stateLocked, from, to int64) *opWait {
	for _, p := range n.pages {
		lo, hi := p.off(), p.off()+PageSize
		if lo >= from && (to < 0 || hi <= to) {
			n.discard(st, p)
			continue
		}
		if hi <= from || (to >= 0 && lo >= to) {
			continue
		}
		// A page partly inside the range.
		zlo := max(from, lo) - lo
		zhi := int64(PageSize)
		if to >= 0 {
			zhi = min(to, hi) - lo
		}
		switch p.state {
		case stateClean, stateDirty:
			clear(p.buf[zlo:zhi])
		case stateReading:
			n.discard(st, p)
		case stateWriting:
			w := n.c.newWait()
			p.waiters = append(p.waiters, w.m.Add())
			return w
		}
	}
	return nil
}

// discard forgets p: it leaves the index (and the dirty set), dirty data
// is thrown away, and the buffer is freed now or when the last pin or I/O
// lets go. Caller holds the node lock and the state lock.
func (n *Node) discard(st *stateLocked, p *page) {
	if n.pages[p.index] == p {
		delete(n.pages, p.index)
	}
	if n.dirty[p.index] == p {
		delete(n.dirty, p.index) // the caller updates the volume's dirty set
	}
	if p.onLRU {
		st.c.lru.remove(p)
	}
	p.detached = true
	if p.state == stateDirty {
		st.setState(p, stateAlloc)
	}
	st.freeIfUnused(p)
}

// Drop forgets the node (its file was deleted): every page is freed, or
// will be when its I/O completes, and dirty data is discarded. It does not
// wait. The node must not be used afterwards.
func (n *Node) Drop() {
	n.lock()
	st := n.c.lockState()
	for _, p := range n.pages {
		n.discard(st, p)
	}
	st.unlock()
	n.dropped = true
	n.unlock()
	n.c.lockVolume()
	delete(n.c.nodes, n)
	n.c.dirty.remove(n)
	n.c.unlockVolume()
}
