package pagecache

import (
	"fmt"

	"github.com/tfsmount/tfsmount/heap"
)

// Write copies p into the cache at file offset off; size is the file
// length before the write. It first asks the Backing to reserve room
// (ENOSPC is returned with nothing dirtied), then fills the partial first
// and last pages if they hold file data (read-modify-write; pages wholly
// past size, or holes, need no I/O), and copies. Whole pages are never
// read. The data stays dirty in the cache until write-back.
//
// On error the count says how many leading bytes of p were accepted; the
// rest were not. A fill error on the partial pages happens before anything
// is copied, so it returns 0. If memory runs out even after evicting and
// writing back, the write stops short with an error wrapping
// heap.ErrNoMemory.
func (n *Node) Write(p []byte, off int64, size int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("pagecache: write at negative offset %d", off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	end := off + int64(len(p))
	assertNoLocksHeld("Backing.Reserve")
	if err := n.b.Reserve(off, int64(len(p))); err != nil {
		return 0, fmt.Errorf("reserve file bytes [%d,%d): %w", off, end, err)
	}
	// As in reads, a stale (smaller) size from the caller must not make
	// the fills zero bytes the node knows are there.
	n.lock()
	size = max(size, n.size)
	n.unlock()
	wr := writeOp{n: n, p: p, off: off, end: end, size: size}
	defer wr.unpin()
	if err := wr.prefill(); err != nil {
		return 0, err
	}
	return wr.copyAll()
}

// writeOp is one Write in progress. It records the pins it took (the
// partial pages it filled) and releases exactly those.
type writeOp struct {
	n        *Node
	p        []byte
	off, end int64 // the bytes being written
	size     int64 // the file length before the write
	pins     []*page
}

// needsFill reports whether page idx must be read before the write: it
// holds file bytes (below size) that the write does not cover.
func (wr *writeOp) needsFill(idx int64) bool {
	lo := idx * PageSize
	hi := min(lo+PageSize, wr.size)
	return hi > lo && (lo < wr.off || hi > wr.end)
}

// prefill reads the partial first and last pages in one go, before
// anything is copied, so a fill error leaves the file untouched.
func (wr *writeOp) prefill() error {
	n, c := wr.n, wr.n.c
	first, last := wr.off/PageSize, (wr.end-1)/PageSize
	idxs := []int64{first}
	if last != first {
		idxs = append(idxs, last)
	}
	var retry roomRetry
	for {
		var w *opWait
		var runs [][]*page
		short := false
		n.lock()
		for _, idx := range idxs {
			if !wr.needsFill(idx) || wr.pinned(idx) {
				continue
			}
			pg, err := n.getPage(idx)
			if err != nil {
				short = true
				break
			}
			st := c.lockState()
			pg.refs++
			switch pg.state {
			case stateAlloc:
				st.setState(pg, stateReading)
				if k := len(runs); k > 0 && runs[k-1][0].index+1 == idx {
					runs[k-1] = append(runs[k-1], pg)
				} else {
					runs = append(runs, []*page{pg})
				}
				c.stats.rmw.Add(1)
			case stateReading:
				w = c.lazyWait(w)
				pg.waiters = append(pg.waiters, w.m.Add())
			}
			st.unlock()
			wr.pins = append(wr.pins, pg)
		}
		n.unlock()
		if len(runs) > 0 {
			w = c.lazyWait(w)
		}
		for _, run := range runs {
			n.fill(run, wr.size, w)
		}
		if w != nil {
			if err := w.wait(); err != nil {
				return fmt.Errorf("read-modify-write of file bytes [%d,%d): %w", wr.off, wr.end, err)
			}
		}
		if !short {
			return nil
		}
		if !c.retryRoom(&retry, 2) {
			return fmt.Errorf("write file bytes [%d,%d): %w", wr.off, wr.end, heap.ErrNoMemory)
		}
	}
}

func (wr *writeOp) pinned(idx int64) bool {
	for _, pg := range wr.pins {
		if pg.index == idx {
			return true
		}
	}
	return false
}

func (wr *writeOp) unpin() { wr.n.unpinAll(wr.pins) }

// Why copyLocked stopped.
type writeStop int

const (
	stopDone     writeStop = iota
	stopWait               // a page is being filled or written back
	stopFill               // a page needs a read first (its earlier fill was lost)
	stopNoMemory           // no buffer for a new page
)

// copyAll copies the data page by page, stepping out of the node lock to
// wait, fill or make room when it must.
func (wr *writeOp) copyAll() (int, error) {
	n, c := wr.n, wr.n.c
	pos := wr.off
	var retry roomRetry
	for pos < wr.end {
		n.lock()
		var stop writeStop
		var fillPage *page
		var w *opWait
		pos, stop, fillPage, w = wr.copyLocked(pos)
		n.unlock()
		switch stop {
		case stopWait:
			w.wait()
		case stopFill:
			n.fill([]*page{fillPage}, wr.size, w)
			if err := w.wait(); err != nil {
				return int(pos - wr.off), fmt.Errorf("read-modify-write of file bytes [%d,%d): %w", pos, wr.end, err)
			}
		case stopNoMemory:
			if !c.retryRoom(&retry, 1) {
				return int(pos - wr.off), fmt.Errorf("write file bytes [%d,%d): %w", pos, wr.end, heap.ErrNoMemory)
			}
			continue
		}
		retry = roomRetry{}
	}
	return len(wr.p), nil
}

// copyLocked copies from pos as far as it can under the node lock and
// returns the new position and why it stopped. On stopWait it has added a
// part of the returned wait to a page's waiters; on stopFill it has pinned
// the page and put it in state reading, and the fill reports to the
// returned wait.
func (wr *writeOp) copyLocked(pos int64) (int64, writeStop, *page, *opWait) {
	n, c := wr.n, wr.n.c
	becameDirty := false
	defer func() {
		if becameDirty {
			c.markDirty(n)
		}
	}()
	for pos < wr.end {
		idx := pos / PageSize
		if n.pages[idx] == nil {
			left := (wr.end-1)/PageSize - idx + 1
			if _, err := n.allocRunLocked(idx, min(left, maxRunPages)); err != nil {
				return pos, stopNoMemory, nil, nil
			}
		}
		var claimed [claimBatch]*page
		k, stop, pg, w := wr.claim(idx, claimed[:0])
		if k == 0 {
			return pos, stop, pg, w
		}
		if len(n.dirty) == 0 {
			becameDirty = true
		}
		for _, pg := range claimed[:k] {
			in := pos % PageSize
			pos += int64(copy(pg.buf[in:], wr.p[pos-wr.off:]))
			n.dirty[pg.index] = pg
		}
		n.size = max(n.size, pos)
	}
	return pos, stopDone, nil, nil
}

// claimBatch bounds how many pages one hold of the state lock claims.
const claimBatch = 64

// claim takes the state lock once for a run of consecutive cached pages
// from idx that the write can copy into, makes each dirty, and appends
// them to out (returning how many). Pages are made dirty before their
// bytes are copied; no one can tell, because write-back collects dirty
// pages, and readers copy out, only under the node lock, which the caller
// holds until the copies are done. A new page (alloc) gets the bytes the
// write does not cover zeroed here: they are past EOF.
//
// When the first page cannot be claimed, claim returns 0 and why, as
// copyLocked does: stopWait (a wait part added to the page's waiters) or
// stopFill (the page pinned and reading). A later page that cannot be
// claimed just ends the run.
func (wr *writeOp) claim(idx int64, out []*page) (int, writeStop, *page, *opWait) {
	n, c := wr.n, wr.n.c
	last := (wr.end - 1) / PageSize
	st := c.lockState()
	defer st.unlock()
	for ; idx <= last && len(out) < cap(out); idx++ {
		pg := n.pages[idx]
		if pg == nil {
			break
		}
		switch pg.state {
		case stateReading, stateWriting:
			if len(out) > 0 {
				return len(out), stopDone, nil, nil
			}
			w := c.newWait()
			pg.waiters = append(pg.waiters, w.m.Add())
			return 0, stopWait, nil, w
		case stateAlloc:
			if wr.needsFill(idx) {
				if len(out) > 0 {
					return len(out), stopDone, nil, nil
				}
				pg.refs++
				wr.pins = append(wr.pins, pg)
				st.setState(pg, stateReading)
				return 0, stopFill, pg, c.newWait()
			}
			from := max(wr.off-pg.off(), 0)
			to := min(wr.end-pg.off(), PageSize)
			clear(pg.buf[:from])
			clear(pg.buf[to:])
		}
		if pg.state != stateDirty {
			st.setState(pg, stateDirty)
		}
		out = append(out, pg)
	}
	return len(out), stopDone, nil, nil
}
