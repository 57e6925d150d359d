package pagecache

import (
	"errors"
	"time"

	"github.com/tfsmount/tfsmount/heap"
)

// Memory: the cache holds at most budget pages with buffers, and the pool
// may refuse an allocation on its own (its budget, or an injected failure).
// An allocation that fails evicts clean pages and retries; a caller that
// still gets ErrNoMemory releases its locks, calls makeRoom (which can
// write dirty data back) and retries, and if that fails too it returns the
// progress it made, or the error if it made none. Nothing waits for memory
// indefinitely.

// allocBufs returns between 1 and k page buffers, or an error, counted
// against the budget. held is the node whose lock the caller holds (nil if
// none): its pages can be evicted directly; other nodes' pages only if
// their lock is free (TryLock). A run of new pages takes the state lock
// and the pool's lock once each, not once per page.
func (c *Cache) allocBufs(held *Node, k int) ([][]byte, error) {
	st := c.lockState()
	if c.cachedPages >= c.budget {
		st.evictLocked(held, c.evictBatch())
	}
	k = int(min(int64(k), c.budget-c.cachedPages))
	if k <= 0 {
		st.unlock()
		return nil, heap.ErrNoMemory
	}
	c.cachedPages += int64(k)
	st.unlock()
	bufs, err := c.pool.AllocN(make([][]byte, 0, k), k)
	if len(bufs) == 0 && errors.Is(err, heap.ErrNoMemory) {
		st = c.lockState()
		freed := st.evictLocked(held, c.evictBatch())
		st.unlock()
		if freed > 0 {
			bufs, err = c.pool.AllocN(bufs, k)
		}
	}
	if short := k - len(bufs); short > 0 {
		st = c.lockState()
		c.cachedPages -= int64(short)
		st.unlock()
	}
	if len(bufs) == 0 {
		return nil, err
	}
	return bufs, nil
}

// evictBatch is how many pages an allocation evicts when the cache is
// full: a few at once so eviction is not paid page by page, but never a
// large share of a small cache.
func (c *Cache) evictBatch() int {
	return int(max(1, min(evictBatch, c.budget/16)))
}

// evictLocked frees up to want unpinned clean (or invalid) pages, oldest
// first, and returns how many it freed. It looks at a bounded number of
// candidates so the state lock is never held for long.
func (st *stateLocked) evictLocked(held *Node, want int) int {
	c := st.c
	freed := 0
	scanned := 0
	for p := c.lru.head.lruNext; p != &c.lru.head && freed < want && scanned < 4*want+64; {
		next := p.lruNext
		scanned++
		if p.refs == 0 {
			n := p.node
			switch {
			case n == held:
				st.evictPage(p)
				freed++
			case n.mu.TryLock():
				lockTried(rankNode)
				st.evictPage(p)
				freed++
				n.mu.Unlock()
				lockRelease(rankNode)
			}
		}
		p = next
	}
	return freed
}

// evictPage frees p's buffer and forgets the page. Caller holds p's node
// lock and the state lock; p is on the LRU and unpinned.
func (st *stateLocked) evictPage(p *page) {
	if p.node.pages[p.index] == p {
		delete(p.node.pages, p.index)
	}
	st.freeBuf(p)
	st.c.stats.evictions.Add(1)
}

// makeRoom tries to free want pages with no lock held: it evicts clean
// pages taking each node's lock in order, and if that is not enough it
// writes back dirty nodes, oldest first, and evicts again. It reports
// whether it freed anything.
func (c *Cache) makeRoom(want int) bool {
	assertNoLocksHeld("makeRoom")
	if c.evict(want) > 0 {
		return true
	}
	for _, n := range c.oldestDirty(4) {
		n.writeback()
		if c.evict(want) > 0 {
			return true
		}
	}
	return false
}

// maxRoomAttempts bounds how many attempts in a row, with no I/O in
// flight, an operation that cannot get memory makes before it gives up;
// pins are held only for the length of one copy, so memory pinned by
// concurrent readers comes back quickly.
const maxRoomAttempts = 25

// roomRetry counts an operation's attempts to get page buffers since I/O
// was last seen in flight. The zero value is ready to use.
type roomRetry struct{ idle int }

// retryRoom is called by an operation that could not get a page buffer.
// It makes room, or waits a little for pins to be released, and reports
// whether to try again. While reads or write-backs are in flight it always
// says yes and starts the count again: their pages come back when the
// device answers, and a slow device is not a lack of memory (under load,
// every page of a small cache can be in a write-back for a while; and the
// pages of a write-back that just completed are released a moment after
// the device answers, so the count must not carry over). Otherwise, after
// maxRoomAttempts in a row it says no, so the caller returns partial
// progress or ErrNoMemory instead of waiting forever.
func (c *Cache) retryRoom(r *roomRetry, want int) bool {
	if c.makeRoom(want) {
		return true
	}
	if c.ioInFlight() {
		r.idle = 0
	} else if r.idle++; r.idle >= maxRoomAttempts {
		c.stats.noMemory.Add(1)
		return false
	}
	time.Sleep(time.Duration(min(r.idle+1, 20)) * 100 * time.Microsecond)
	return true
}

// ioInFlight reports whether pages are held by device I/O or by a
// write-back waiting to release them.
func (c *Cache) ioInFlight() bool {
	if c.wbActive.Load() > 0 {
		return true
	}
	st := c.lockState()
	defer st.unlock()
	return c.inflightPages > 0
}

// evict frees up to want unpinned pages from the LRU, taking locks in
// order: victims are picked under the state lock, then each is rechecked
// under its node lock.
func (c *Cache) evict(want int) int {
	st := c.lockState()
	var victims []*page
	scanned := 0
	for p := c.lru.head.lruNext; p != &c.lru.head && len(victims) < want && scanned < 4*want+64; p = p.lruNext {
		scanned++
		if p.refs == 0 {
			victims = append(victims, p)
		}
	}
	st.unlock()
	freed := 0
	for _, p := range victims {
		n := p.node
		n.lock()
		st := c.lockState()
		if p.onLRU && p.refs == 0 {
			st.evictPage(p)
			freed++
		}
		st.unlock()
		n.unlock()
	}
	return freed
}

// oldestDirty returns up to k nodes with dirty data, oldest first.
func (c *Cache) oldestDirty(k int) []*Node {
	c.lockVolume()
	defer c.unlockVolume()
	return c.dirty.oldest(k)
}
