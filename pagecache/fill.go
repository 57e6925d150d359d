package pagecache

import (
	"fmt"
	"io"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
)

// sectorSize is the granularity of device requests: TFS addresses 512-byte
// sectors, so reads that end at EOF are rounded up to it.
const sectorSize = 512

// fill reads a run of consecutive pages, all in state reading and claimed
// by the caller, from the device: the run is mapped with one Backing.Map
// call, every data segment becomes one scatter-gather request, and holes
// and bytes past EOF are zeroed with no I/O. The outcome is reported to w
// (one part) after the pages have changed state, so a waiter that wakes
// sees them clean (or back in alloc on error). Called with no lock held.
func (n *Node) fill(run []*page, size int64, w *opWait) {
	assertNoLocksHeld("fill")
	c := n.c
	// Both merges complete from bottom-half work (device completions, then
	// rm's done): AddBH lets the chain run on the worker that reaps the
	// last read, up to the waiter's wake-up.
	part := w.m.AddBH()
	rm := bh.NewMerge(c.q, func(err error) {
		n.fillDone(run, err)
		part(err)
	})
	defer rm.Finish()
	c.stats.fillPages.Add(int64(len(run)))
	// The pages are ours until the fill completes and their contents are
	// not valid yet, so their buffers can be swapped around: in address
	// order, neighbouring buffers make one contiguous device transfer.
	if len(run) > 1 {
		bufs := make([][]byte, len(run))
		for i, p := range run {
			bufs[i] = p.buf
		}
		sortByAddress(bufs)
		for i, p := range run {
			p.buf = bufs[i]
		}
	}

	runOff := run[0].off()
	runLen := int64(len(run)) * PageSize
	dataLen := min(runLen, size-runOff)
	if dataLen <= 0 {
		zeroPages(run, 0, runLen)
		return
	}
	segs, err := n.b.Map(runOff, dataLen)
	if err == nil {
		err = checkSegments(segs, runOff, dataLen, true)
	}
	if err != nil {
		rm.Add()(fmt.Errorf("map file bytes [%d,%d): %w", runOff, runOff+dataLen, err))
		return
	}
	if dataLen < runLen {
		zeroPages(run, dataLen, runLen-dataLen)
	}
	for _, s := range segs {
		rel := s.Off - runOff
		if s.Dev == Hole {
			zeroPages(run, rel, s.Len)
			continue
		}
		readLen := s.Len
		var clearFrom, clearTo int64 // bytes read past EOF, zeroed after the read
		if rel+s.Len == dataLen && s.Len%sectorSize != 0 {
			rounded := min((s.Len+sectorSize-1)/sectorSize*sectorSize, runLen-rel, c.dev.Size()-s.Dev)
			if rounded > readLen {
				clearFrom, clearTo = rel+readLen, rel+rounded
				readLen = rounded
			}
		}
		done := rm.AddBH() // blockdev calls Done from bh work
		want := readLen
		fileOff := s.Off
		c.stats.fills.Add(1)
		c.dev.Submit(&blockdev.Request{
			Op:   blockdev.OpRead,
			Off:  s.Dev,
			Bufs: pageSlices(run, rel, readLen),
			Done: func(got int64, err error) {
				if err == nil && got != want {
					err = fmt.Errorf("read %d bytes at device offset %d: got %d: %w", want, s.Dev, got, io.ErrUnexpectedEOF)
				}
				if err != nil {
					err = fmt.Errorf("fill file bytes [%d,%d): %w", fileOff, fileOff+want, err)
				} else if clearTo > clearFrom {
					zeroPages(run, clearFrom, clearTo-clearFrom)
				}
				done(err)
			},
		})
	}
}

// fillDone moves the pages of a finished fill to clean, or back to alloc
// ("not present") on error, and wakes their waiters with the outcome. It
// runs on a bh worker and takes only the state lock.
func (n *Node) fillDone(run []*page, err error) {
	c := n.c
	var ws []bh.Done
	st := c.lockState()
	for _, p := range run {
		if err == nil {
			st.setState(p, stateClean)
		} else {
			st.setState(p, stateAlloc)
		}
		ws = append(ws, st.takeWaiters(p)...)
		st.freeIfUnused(p)
	}
	st.unlock()
	if err != nil {
		c.stats.readErrs.Add(1)
		c.logError("pagecache: %v", err)
	}
	runWaiters(ws, err)
}

// checkSegments verifies that segs cover [off, off+n) exactly and in order,
// so a buggy or hostile mapping cannot make the cache read or write the
// wrong buffer bytes.
func checkSegments(segs []Segment, off, n int64, holesOK bool) error {
	pos := off
	for i, s := range segs {
		if s.Off != pos || s.Len <= 0 || s.Off+s.Len > off+n {
			return fmt.Errorf("segment %d [%d,+%d) does not continue the mapping of [%d,%d) at %d", i, s.Off, s.Len, off, off+n, pos)
		}
		if s.Dev == Hole && !holesOK {
			return fmt.Errorf("segment %d [%d,+%d) is a hole where data must go", i, s.Off, s.Len)
		}
		if s.Dev < 0 && s.Dev != Hole {
			return fmt.Errorf("segment %d [%d,+%d) has device offset %d", i, s.Off, s.Len, s.Dev)
		}
		pos += s.Len
	}
	if pos != off+n {
		return fmt.Errorf("segments cover [%d,%d) of [%d,%d)", off, pos, off, off+n)
	}
	return nil
}

// pageSlices returns the buffers of bytes [rel, rel+n) of a run of pages,
// one slice per page touched (the scatter-gather list).
func pageSlices(run []*page, rel, n int64) [][]byte {
	bufs := make([][]byte, 0, (n+PageSize-1)/PageSize+1)
	for n > 0 {
		p := run[rel/PageSize]
		in := rel % PageSize
		k := min(n, PageSize-in)
		bufs = append(bufs, p.buf[in:in+k])
		rel += k
		n -= k
	}
	return bufs
}

// zeroPages clears bytes [rel, rel+n) of a run of pages.
func zeroPages(run []*page, rel, n int64) {
	for _, b := range pageSlices(run, rel, n) {
		clear(b)
	}
}
