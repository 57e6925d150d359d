package pagecache

import (
	"fmt"
	"io"
	"slices"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
)

// wbRun is one run of consecutive dirty pages written back together: one
// PrepareWrite, one device request per segment, one CommitWrite. Its
// fields record what it holds: every page in it is pinned (refs) and was
// moved dirty -> writing, and exactly those are released at the end.
type wbRun struct {
	pages    []*page
	off, len int64 // file bytes written (the last page may be clipped at EOF)
	prepared bool  // PrepareWrite succeeded: CommitWrite is owed
	err      error // set before the run's done posts; read after the wait
}

// writeback writes back every page of n that is dirty now, waits for the
// device, tells the Backing (CommitWrite), and only then releases the
// pages, so a page is never evicted (and re-read through Map) before the
// filesystem knows where its data went. Failed pages go back to dirty and
// the error becomes the node's sticky error. Called with no lock held;
// it takes the node's write-back lock for the whole time.
func (n *Node) writeback() error {
	c := n.c
	n.lockWB()
	defer n.unlockWB()
	runs := n.collectDirty()
	if len(runs) == 0 {
		return nil
	}
	c.wbActive.Add(1)
	defer c.wbActive.Add(-1) // runs after releaseRuns, below
	assertNoLocksHeld("write-back")
	var w *opWait
	var reqs []*blockdev.Request
	for _, r := range runs {
		if r.len <= 0 {
			// Wholly past EOF: nothing to write, the page is just clean.
			n.writeDone(r, nil)
			continue
		}
		segs, err := n.b.PrepareWrite(r.off, r.len)
		if err == nil {
			err = checkSegments(segs, r.off, r.len, false)
		}
		if err != nil {
			r.err = fmt.Errorf("prepare write-back of file bytes [%d,%d): %w", r.off, r.off+r.len, err)
			n.writeDone(r, r.err)
			continue
		}
		r.prepared = true
		w = c.lazyWait(w)
		reqs = n.runRequests(r, segs, w, reqs)
	}
	// One submission for every run: scattered dirty pages (random
	// writes) make many small requests, and the device hands them to the
	// kernel as one batch.
	blockdev.SubmitAll(c.dev, reqs)
	if w != nil {
		w.wait()
	}
	var first error
	for _, r := range runs {
		if r.prepared {
			n.b.CommitWrite(r.off, r.len, r.err)
		}
		if r.err != nil {
			c.stats.wrErrs.Add(1)
			c.logError("pagecache: %v", r.err)
			if first == nil {
				first = r.err
			}
		}
	}
	n.releaseRuns(runs, first)
	return first
}

// collectDirty moves every dirty page of n to writing, pinned, and groups
// them into runs of consecutive pages.
func (n *Node) collectDirty() []*wbRun {
	c := n.c
	n.lock()
	defer n.unlock()
	if len(n.dirty) == 0 {
		return nil
	}
	idxs := make([]int64, 0, len(n.dirty))
	for idx := range n.dirty {
		idxs = append(idxs, idx)
	}
	slices.Sort(idxs)
	// Write up to the end of the file, rounded up to a sector: the
	// device is written in whole sectors, and the bytes of the last page
	// past EOF are zeros.
	limit := (n.size + sectorSize - 1) / sectorSize * sectorSize
	var runs []*wbRun
	st := c.lockState()
	for _, idx := range idxs {
		pg := n.dirty[idx]
		delete(n.dirty, idx)
		st.setState(pg, stateWriting)
		pg.refs++
		if k := len(runs); k > 0 {
			r := runs[k-1]
			if r.pages[len(r.pages)-1].index+1 == idx && len(r.pages) < maxRunPages {
				r.pages = append(r.pages, pg)
				continue
			}
		}
		runs = append(runs, &wbRun{pages: []*page{pg}})
	}
	st.unlock()
	c.markClean(n)
	for _, r := range runs {
		r.off = r.pages[0].off()
		r.len = min(int64(len(r.pages))*PageSize, limit-r.off)
	}
	return runs
}

// runRequests makes one device write per segment of a prepared run and
// appends them to reqs for the caller to submit; the run's merge moves its
// pages out of writing when all are done.
func (n *Node) runRequests(r *wbRun, segs []Segment, w *opWait, reqs []*blockdev.Request) []*blockdev.Request {
	c := n.c
	part := w.m.Add()
	rm := bh.NewMerge(c.q, func(err error) {
		if err != nil {
			err = fmt.Errorf("write back file bytes [%d,%d): %w", r.off, r.off+r.len, err)
		}
		r.err = err
		n.writeDone(r, err)
		part(err)
	})
	defer rm.Finish()
	for _, s := range segs {
		done := rm.Add()
		want := s.Len
		dev := s.Dev
		c.stats.writebacks.Add(1)
		reqs = append(reqs, &blockdev.Request{
			Op:   blockdev.OpWrite,
			Off:  s.Dev,
			Bufs: pageSlices(r.pages, s.Off-r.off, s.Len),
			Done: func(got int64, err error) {
				if err == nil && got != want {
					err = fmt.Errorf("wrote %d of %d bytes at device offset %d: %w", got, want, dev, io.ErrShortWrite)
				}
				done(err)
			},
		})
	}
	return reqs
}

// writeDone moves a run's pages from writing to clean, or back to dirty on
// error, and wakes their waiters (writers wanting to change them, truncates
// wanting to zero them). The pages stay pinned until releaseRuns, after
// CommitWrite. Runs on a bh worker (or in the write-back goroutine for
// runs that never reached the device) and takes only the state lock.
func (n *Node) writeDone(r *wbRun, err error) {
	c := n.c
	var ws []bh.Done
	st := c.lockState()
	for _, pg := range r.pages {
		if err == nil {
			st.setState(pg, stateClean)
		} else {
			st.setState(pg, stateDirty)
		}
		ws = append(ws, st.takeWaiters(pg)...)
	}
	st.unlock()
	if err == nil {
		c.stats.wbPages.Add(int64(len(r.pages)))
	}
	runWaiters(ws, err)
}

// releaseRuns unpins the pages of finished runs, puts pages that are dirty
// again back into the dirty set, and records err as the sticky error.
func (n *Node) releaseRuns(runs []*wbRun, err error) {
	c := n.c
	n.lock()
	defer n.unlock()
	wasDirty := len(n.dirty) > 0
	st := c.lockState()
	for _, r := range runs {
		for _, pg := range r.pages {
			if pg.state == stateDirty && !pg.detached {
				n.dirty[pg.index] = pg
			}
			st.unpin(pg)
		}
	}
	st.unlock()
	if err != nil && n.wbErr == nil {
		n.wbErr = err
	}
	if !wasDirty && len(n.dirty) > 0 {
		c.markDirty(n)
	}
}
