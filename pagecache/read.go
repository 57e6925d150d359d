package pagecache

import (
	"cmp"
	"fmt"
	"slices"
	"unsafe"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/heap"
)

const (
	// maxReadAhead bounds the read-ahead window (pages).
	maxReadAhead = 512
	// minReadAhead is the first window of a sequential reader.
	minReadAhead = 8
)

// Read copies file bytes [off, off+len(p)) into p, clipped to size, the
// current file length. The count is short only at EOF (or when an error
// ends the read), and reaching EOF is not an error: Read never returns
// io.EOF. Missing pages are filled with as few device requests as
// possible; several readers of one missing page share its fill; the copy
// into p happens in the caller's goroutine.
func (n *Node) Read(p []byte, off int64, size int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("pagecache: read at negative offset %d", off)
	}
	end := min(off+int64(len(p)), size)
	if off >= end {
		return 0, nil
	}
	done := int64(0)
	for off+done < end {
		k, err := n.readChunk(p[done:end-off], off+done, size)
		done += int64(k)
		if err != nil {
			return int(done), err
		}
	}
	return int(done), nil
}

// maxPins bounds how many pages one step of a read pins, so a huge read
// cannot pin the whole budget.
func (c *Cache) maxPins() int64 {
	return max(1, min(4*maxRunPages, c.budget/2))
}

// readChunk pins the pages of a prefix of [off, off+len(p)), fills the
// missing ones, waits, copies and unpins. It returns how much it copied.
func (n *Node) readChunk(p []byte, off, size int64) (int, error) {
	c := n.c
	first := off / PageSize
	last := (off + int64(len(p)) - 1) / PageSize
	last = min(last, first+c.maxPins()-1)
	var pinBuf [4]*page // small reads pin without allocating
	var retry roomRetry
	for {
		pl := n.pinForRead(first, last, size, pinBuf[:0])
		pins, w := pl.pins, pl.w
		if len(pins) == 0 {
			if c.retryRoom(&retry, 1) {
				continue
			}
			return 0, fmt.Errorf("read file bytes at %d: %w", off, heap.ErrNoMemory)
		}
		for _, run := range pl.runs {
			n.fill(run, pl.size, w)
		}
		n.fillAhead(pl.ra, pl.size)
		var err error
		if w != nil {
			err = w.wait()
		}
		copied := 0
		if err == nil {
			n.rlock()
			pos := off
			for _, pg := range pins {
				in := pos - pg.off()
				k := copy(p[pos-off:], pg.buf[in:])
				pos += int64(k)
			}
			n.runlock()
			copied = int(pos - off)
		}
		n.unpinAll(pins)
		return copied, err
	}
}

// readPlan is what pinForRead prepared: the pinned pages, the runs to
// fill (and read ahead), the wait (nil when every page was valid), and the
// file length to fill up to.
type readPlan struct {
	pins     []*page
	runs, ra [][]*page
	w        *opWait
	size     int64
}

// pinForRead pins pages first..last (stopping early if memory runs out),
// claims the missing ones for filling (grouped in runs of consecutive
// pages), registers a wait on pages someone else is filling, and picks
// read-ahead runs for a sequential reader.
//
// Fills use the larger of the caller's size and the node's: a reader may
// pass a length read before a concurrent write extended the file, and
// zeroing the extension in a clean page would hide committed data.
func (n *Node) pinForRead(first, last, size int64, pins []*page) readPlan {
	c := n.c
	n.lock()
	defer n.unlock()
	n.size = max(n.size, size)
	size = n.size
	var runs [][]*page
	var w *opWait
	var cur []*page
	endRun := func() {
		if len(cur) > 0 {
			runs = append(runs, cur)
			cur = nil
		}
	}
	var hits, misses int64
	for idx := first; idx <= last; idx++ {
		if n.pages[idx] == nil {
			if _, err := n.allocRunLocked(idx, last-idx+1); err != nil {
				break
			}
		}
		pg := n.pages[idx]
		st := c.lockState()
		pg.refs++
		switch pg.state {
		case stateClean:
			c.lru.touch(pg)
			hits++
			endRun()
		case stateDirty, stateWriting:
			hits++
			endRun()
		case stateReading:
			w = c.lazyWait(w)
			pg.waiters = append(pg.waiters, w.m.Add())
			misses++
			endRun()
		case stateAlloc:
			st.setState(pg, stateReading)
			if len(cur) == maxRunPages {
				endRun()
			}
			cur = append(cur, pg)
			misses++
		}
		st.unlock()
		pins = append(pins, pg)
	}
	endRun()
	if len(runs) > 0 {
		w = c.lazyWait(w)
	}
	c.stats.hits.Add(hits)
	c.stats.misses.Add(misses)
	pl := readPlan{pins: pins, runs: runs, w: w, size: size}
	if int64(len(pins)) == last-first+1 {
		pl.ra = n.readAheadLocked(first, last, size)
	}
	return pl
}

// readAheadLocked grows the window of a sequential reader and claims the
// missing pages ahead of it. The stream's raEnd marks how far read-ahead has already
// been issued; a new window starts only when the reader is within half a
// window of that mark, so a reader of cached data pays nothing here and
// one of cold data keeps the device busy ahead of it. Read-ahead may
// evict old clean pages like any allocation; the window is capped at a
// quarter of the budget so it cannot push out much. Caller holds the node
// lock.
func (n *Node) readAheadLocked(first, last, size int64) [][]*page {
	c := n.c
	rs, sequential := n.streamFor(first)
	rs.nextRead = last + 1
	if !sequential {
		rs.raPages = 0
		rs.raEnd = 0
		return nil
	}
	// The first window is at least the read itself: a reader asking for
	// 1 MiB at a time wants the next MiB on its way while it copies.
	rs.raPages = min(max(2*rs.raPages, minReadAhead, int(last-first+1)), maxReadAhead, int(c.budget/4))
	if rs.raEnd > last+1+int64(rs.raPages)/2 {
		return nil
	}
	endPage := (size + PageSize - 1) / PageSize
	limit := min(last+1+int64(rs.raPages), endPage)
	runs, idx := n.claimMissingLocked(max(last+1, rs.raEnd), limit)
	rs.raEnd = idx
	return runs
}

// claimMissingLocked allocates the pages in [idx, limit) that the node
// does not have, marks them reading and returns them in runs of
// consecutive pages for fill, with the index it stopped at (before limit
// when memory ran out). Pages it already has are left alone. Caller holds
// the node lock.
func (n *Node) claimMissingLocked(idx, limit int64) ([][]*page, int64) {
	c := n.c
	var runs [][]*page
	var cur []*page
	for idx < limit {
		if n.pages[idx] != nil {
			if len(cur) > 0 {
				runs = append(runs, cur)
				cur = nil
			}
			idx++
			continue
		}
		k, err := n.allocRunLocked(idx, limit-idx)
		if err != nil {
			break
		}
		st := c.lockState()
		for j := idx; j < idx+int64(k); j++ {
			pg := n.pages[j]
			st.setState(pg, stateReading)
			if len(cur) == maxRunPages {
				runs = append(runs, cur)
				cur = nil
			}
			cur = append(cur, pg)
		}
		st.unlock()
		c.stats.readAhead.Add(int64(k))
		idx += int64(k)
	}
	if len(cur) > 0 {
		runs = append(runs, cur)
	}
	return runs, idx
}

// Prefetch starts filling the missing pages of [off, off+length), clipped
// to size (the file length), and returns without waiting: it is read-ahead
// for a reader expected soon, who then finds the pages cached or in
// flight. Like read-ahead it takes at most a quarter of the budget and
// stops quietly when memory is short.
func (n *Node) Prefetch(off, length, size int64) {
	c := n.c
	n.lock()
	n.size = max(n.size, size)
	size = n.size
	end := min(off+length, size, off+c.budget/4*PageSize)
	var runs [][]*page
	if off >= 0 && off < end {
		runs, _ = n.claimMissingLocked(off/PageSize, (end+PageSize-1)/PageSize)
	}
	n.unlock()
	n.fillAhead(runs, size)
}

// fillAhead fills runs claimed for read-ahead or prefetch. Nobody waits
// for them: the merge's done does nothing.
func (n *Node) fillAhead(runs [][]*page, size int64) {
	if len(runs) == 0 {
		return
	}
	w := &opWait{m: bh.NewMerge(n.c.q, func(error) {})}
	for _, run := range runs {
		n.fill(run, size, w)
	}
	w.m.Finish()
}

// getPage returns the page at idx, allocating a buffer for a new one (in
// state alloc). Caller holds the node lock.
func (n *Node) getPage(idx int64) (*page, error) {
	if pg := n.pages[idx]; pg != nil {
		return pg, nil
	}
	bufs, err := n.c.allocBufs(n, 1)
	if err != nil {
		return nil, err
	}
	pg := &page{node: n, index: idx, buf: bufs[0]}
	st := n.c.lockState()
	st.setState(pg, stateAlloc)
	st.unlock()
	n.pages[idx] = pg
	return pg, nil
}

// allocRunLocked creates pages idx, idx+1, ... for up to max consecutive
// indices that have none, and returns how many it made (0 with the error
// if not even one buffer could be had). The buffers are handed out in
// ascending address order: the pool returns neighbours for consecutive
// allocations (in descending order once pages were freed in file order),
// and ascending neighbours let the device send a run of pages as one
// contiguous buffer. Caller holds the node lock.
func (n *Node) allocRunLocked(idx, max int64) (int, error) {
	c := n.c
	want := int64(0)
	for want < max && n.pages[idx+want] == nil {
		want++
	}
	// Make room for the whole run at once: pages evicted together were
	// usually allocated together, so their buffers come back as
	// neighbours for this run.
	st := c.lockState()
	if over := c.cachedPages + want - c.budget; over > 0 {
		st.evictLocked(n, int(over))
	}
	st.unlock()
	bufs, err := c.allocBufs(n, int(want))
	if err != nil {
		return 0, err
	}
	sortByAddress(bufs)
	st = c.lockState()
	for i, buf := range bufs {
		pg := &page{node: n, index: idx + int64(i), buf: buf}
		st.setState(pg, stateAlloc)
		n.pages[pg.index] = pg
	}
	st.unlock()
	return len(bufs), nil
}

// sortByAddress orders page buffers by their address.
func sortByAddress(bufs [][]byte) {
	slices.SortFunc(bufs, func(a, b []byte) int {
		return cmp.Compare(uintptr(unsafe.Pointer(&a[0])), uintptr(unsafe.Pointer(&b[0])))
	})
}

// unpinAll drops one pin on each page.
func (n *Node) unpinAll(pins []*page) {
	if len(pins) == 0 {
		return
	}
	st := n.c.lockState()
	for _, pg := range pins {
		st.unpin(pg)
	}
	st.unlock()
}
