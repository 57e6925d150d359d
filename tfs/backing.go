package tfs

import (
	"syscall"

	"github.com/tfsmount/tfsmount/pagecache"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// backing is a regular file as the pagecache sees it (pagecache.Backing):
// delayed allocation, with blocks reserved at write time, allocated at
// write-back and logged only once their data is on the device.
type backing struct {
	fs *FS
	n  *Node
}

var _ pagecache.Backing = backing{}

func blockRange(off, n int64) (uint64, uint64) {
	return uint64(off) / format.BlockSize, (uint64(off+n) + format.BlockSize - 1) / format.BlockSize
}

// Map describes [off, off+n): holes, uninitialised extents and blocks whose
// data is not written yet read as Hole.
func (b backing) Map(off, n int64) ([]pagecache.Segment, error) {
	fs := b.fs
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var segs []pagecache.Segment
	add := func(o, l, dev int64) {
		if k := len(segs) - 1; k >= 0 {
			p := &segs[k]
			if (dev == pagecache.Hole && p.Dev == pagecache.Hole) || (dev != pagecache.Hole && p.Dev != pagecache.Hole && p.Dev+p.Len == dev) {
				p.Len += l
				return
			}
		}
		segs = append(segs, pagecache.Segment{Off: o, Len: l, Dev: dev})
	}
	end := off + n
	for pos := off; pos < end; {
		blk := uint64(pos) / format.BlockSize
		i := b.n.find(blk)
		if i == len(b.n.exts) {
			add(pos, end-pos, pagecache.Hole)
			break
		}
		e := b.n.exts[i]
		if e.fblock > blk {
			next := min(end, int64(e.fblock)*format.BlockSize)
			add(pos, next-pos, pagecache.Hole)
			pos = next
			continue
		}
		next := min(end, int64(e.end())*format.BlockSize)
		if e.uninited || e.pending {
			add(pos, next-pos, pagecache.Hole)
		} else {
			add(pos, next-pos, int64(e.dblock)*format.BlockSize+pos-int64(e.fblock)*format.BlockSize)
		}
		pos = next
	}
	return segs, nil
}

// forEachGap calls fn for each run of file blocks in [b0, b1) that no
// extent covers, in order, and stops at the first error. fn may add
// extents inside the gap it is given.
func (n *Node) forEachGap(b0, b1 uint64, fn func(g0, g1 uint64) error) error {
	for pos := b0; pos < b1; {
		next := b1
		if i := n.find(pos); i < len(n.exts) {
			e := n.exts[i]
			if e.fblock <= pos {
				pos = min(b1, e.end())
				continue
			}
			next = min(b1, e.fblock)
		}
		if err := fn(pos, next); err != nil {
			return err
		}
		pos = next
	}
	return nil
}

// Reserve sets aside blocks for the unallocated part of [off, off+n). Out
// of space, it first waits for unlinked open files to be released.
func (b backing) Reserve(off, n int64) error {
	return b.fs.allocWaitingForOrphans(func() error { return b.reserve(off, n) })
}

func (b backing) reserve(off, n int64) error {
	fs := b.fs
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.checkWritable(); err != nil {
		return err
	}
	b0, b1 := blockRange(off, n)
	var need []([2]uint64)
	var count uint64
	b.n.forEachGap(b0, b1, func(g0, g1 uint64) error {
		if c := b.n.resv.uncovered(g0, g1); c > 0 {
			need = append(need, [2]uint64{g0, g1})
			count += c
		}
		return nil
	})
	if count == 0 {
		return nil
	}
	free := fs.free.FreeBlocks()
	if hold := fs.reserved + fs.logReserveShortfall(); free < hold || free-hold < count {
		return errnoErr("no space for new file data", syscall.ENOSPC)
	}
	for _, r := range need {
		b.n.resv.add(r[0], r[1])
	}
	fs.reserved += count
	return nil
}

// PrepareWrite allocates what [off, off+n) still lacks and maps it.
func (b backing) PrepareWrite(off, n int64) ([]pagecache.Segment, error) {
	fs := b.fs
	fs.mu.Lock()
	defer fs.mu.Unlock()
	b0, b1 := blockRange(off, n)
	if err := b.n.forEachGap(b0, b1, func(g0, g1 uint64) error {
		return fs.allocGap(b.n, g0, g1, false)
	}); err != nil {
		return nil, err
	}
	var segs []pagecache.Segment
	end := off + n
	for pos := off; pos < end; {
		e := b.n.extentAt(uint64(pos) / format.BlockSize)
		if e == nil {
			return nil, errnoErr("extent map changed during write-back", syscall.EIO)
		}
		next := min(end, int64(e.end())*format.BlockSize)
		dev := int64(e.dblock)*format.BlockSize + pos - int64(e.fblock)*format.BlockSize
		if k := len(segs) - 1; k >= 0 && segs[k].Dev+segs[k].Len == dev {
			segs[k].Len += next - pos
		} else {
			segs = append(segs, pagecache.Segment{Off: pos, Len: next - pos, Dev: dev})
		}
		pos = next
	}
	return segs, nil
}

// CommitWrite logs the extents whose data is now written: pending pieces
// (merged into the extent they grow when possible) and uninitialised
// extents, which are split so that only written blocks become initialised.
func (b backing) CommitWrite(off, n int64, err error) {
	if err != nil {
		return
	}
	fs := b.fs
	fs.mu.Lock()
	defer fs.mu.Unlock()
	b0, b1 := blockRange(off, n)
	var staged uint64
	if fs.w != nil {
		staged = fs.w.entries
	}
	if cerr := fs.commitRange(b.n, b0, b1); cerr != nil && fs.w != nil && fs.w.err == nil {
		fs.w.err = cerr
	}
	if fs.w != nil && fs.w.entries != staged {
		// The records just staged point at the data written: the log
		// write that carries them flushes first (ordering rule 2).
		fs.w.dataFirst = true
	}
}

func (fs *FS) commitRange(n *Node, b0, b1 uint64) error {
	var todo []*extent
	for i := n.find(b0); i < len(n.exts) && n.exts[i].fblock < b1; i++ {
		todo = append(todo, n.exts[i])
	}
	for _, e := range todo {
		switch {
		case e.pending:
			prev := n.extentAt(e.fblock - 1)
			if e.fblock > 0 && prev != nil && mergeable(prev, e) && prev.length+e.length <= maxExtentBlocks {
				prev.length += e.length
				prev.allocated += e.allocated
				n.removeExtent(e)
				if err := fs.logExtentSize(n, prev); err != nil {
					return err
				}
				continue
			}
			if err := fs.logNewExtent(n, e); err != nil {
				// The data is on the device: keep showing it; the sticky
				// error tells every later sync that the log is behind.
				e.pending = false
				return err
			}
		case e.uninited:
			if err := fs.initExtent(n, e, max(b0, e.fblock), min(b1, e.end())); err != nil {
				return err
			}
		}
	}
	return nil
}

// mergeable reports whether pending piece e can join the committed extent
// base at commit (within the size cap, which callers check): e continues
// base in the file and on the volume, and base is initialised and whole.
func mergeable(base, e *extent) bool {
	return !base.pending && !base.uninited && base.end() == e.fblock &&
		base.dblock+base.allocated == e.dblock && base.length == base.allocated
}

// initExtent makes file blocks [w0, w1) of uninited extent e initialised,
// splitting e so the unwritten rest stays uninited.
func (fs *FS) initExtent(n *Node, e *extent, w0, w1 uint64) error {
	if w0 == e.fblock && w1 == e.end() && e.length == e.allocated {
		e.uninited = false
		if n.links == 0 || e.t == nil {
			return nil
		}
		return fs.logEAV(e.t, "uninited", nil, false)
	}
	// Split into up to three extents: [fblock,w0) uninited, [w0,w1)
	// initialised, [w1,end) uninited; the last one keeps any allocation
	// beyond length.
	pieces := []*extent{}
	if w0 > e.fblock {
		pieces = append(pieces, &extent{fblock: e.fblock, dblock: e.dblock, length: w0 - e.fblock, allocated: w0 - e.fblock, uninited: true})
	}
	pieces = append(pieces, &extent{fblock: w0, dblock: e.dblock + (w0 - e.fblock), length: w1 - w0, allocated: w1 - w0})
	if w1 < e.end() || e.allocated > e.length {
		rest := e.end() - w1
		pieces = append(pieces, &extent{fblock: w1, dblock: e.dblock + (w1 - e.fblock), length: rest, allocated: e.allocated - (w1 - e.fblock), uninited: true})
		if rest == 0 {
			// Only spare allocation is left: fold it into the written piece.
			p := pieces[len(pieces)-2]
			p.allocated += pieces[len(pieces)-1].allocated
			pieces = pieces[:len(pieces)-1]
		}
	}
	if err := fs.logRemoveExtent(n, e); err != nil {
		return err
	}
	n.removeExtent(e)
	for _, p := range pieces {
		n.insertExtent(p)
		if err := fs.logNewExtent(n, p); err != nil {
			return err
		}
	}
	return nil
}
