package tfs

import (
	"fmt"
	"syscall"

	"github.com/tfsmount/tfsmount/tfs/format"
)

// fallocate and SEEK_DATA/SEEK_HOLE (docs/format.md, "Regular files and
// extents"; the modes served are in README.md, "Compatibility with Nanos").

const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
)

// Fallocate supports mode 0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE and
// ZERO_RANGE with or without KEEP_SIZE.
func (fs *FS) Fallocate(n *Node, mode uint32, off, length int64) error {
	if off < 0 || length <= 0 || off+length < off || off+length > MaxFileSize {
		return errnoErr("fallocate range", syscall.EINVAL)
	}
	if err := checkFile(n); err != nil {
		return err
	}
	// As vfs_fallocate: nothing on an immutable file, and on an
	// append-only one only an allocation that keeps the size.
	if f := n.iflags.Load(); f&FlagImmutable != 0 || (f&FlagAppend != 0 && mode != FallocKeepSize) {
		return checkUnsealed(n, "fallocate")
	}
	if mode&FallocKeepSize == 0 {
		n.extend.Lock() // it may move the end of file (see Write)
		defer n.extend.Unlock()
	}
	switch mode {
	case 0, FallocKeepSize:
		return fs.allocWaitingForOrphans(func() error { return fs.allocate(n, mode, off, length) })
	case FallocPunchHole | FallocKeepSize:
		return fs.punch(n, off, length)
	case FallocZeroRange, FallocZeroRange | FallocKeepSize:
		return fs.zeroRange(n, mode&FallocKeepSize, off, length)
	}
	return errnoErr("fallocate mode", syscall.EOPNOTSUPP)
}

// allocate creates uninited extents for the holes of the range.
func (fs *FS) allocate(n *Node, mode uint32, off, length int64) error {
	fd := fs.fileData(n)
	// Dirty pages may still lack blocks; write them first so the holes
	// seen below are real holes.
	if err := fd.Sync(); err != nil {
		return err
	}
	fs.mu.Lock()
	size := n.size.Load()
	fs.mu.Unlock()
	if mode&FallocKeepSize == 0 && off+length > size {
		if err := fs.zeroTail(n, fd, size, off+length); err != nil {
			return err
		}
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.checkWritable(); err != nil {
		return err
	}
	b0, b1 := blockRange(off, length)
	if err := n.forEachGap(b0, b1, func(g0, g1 uint64) error {
		return fs.allocGap(n, g0, g1, true)
	}); err != nil {
		return err
	}
	if mode&FallocKeepSize == 0 && off+length > n.size.Load() {
		n.size.Store(off + length)
		fs.touchLocked(n, true)
	}
	return nil
}

// punch removes whole blocks of the range from the file (extents fully
// inside are dropped, partly covered ones are split) and lets the cache
// zero the partial blocks at either end.
func (fs *FS) punch(n *Node, off, length int64) error {
	fd := fs.fileData(n)
	if err := fd.Sync(); err != nil {
		return err
	}
	fs.mu.Lock()
	if err := fs.checkWritable(); err != nil {
		fs.mu.Unlock()
		return err
	}
	p0 := (uint64(off) + format.BlockSize - 1) / format.BlockSize
	p1 := uint64(off+length) / format.BlockSize
	var err error
	if p0 < p1 {
		err = fs.punchBlocksLocked(n, p0, p1)
	}
	fs.mu.Unlock()
	if err != nil {
		return err
	}
	// Partial blocks (and the pages around) are zeroed in the cache and
	// written back like any write.
	fd.PunchHole(off, length)
	zeroEdge := func(from, to int64) error {
		if from >= to {
			return nil
		}
		fs.mu.Lock()
		e := n.extentAt(uint64(from) / format.BlockSize)
		size := n.size.Load()
		fs.mu.Unlock()
		if e == nil || from >= size {
			return nil
		}
		_, err := fd.Write(make([]byte, min(to, size)-from), from, size)
		return err
	}
	if err := zeroEdge(off, min(off+length, int64(p0)*format.BlockSize)); err != nil {
		return err
	}
	if p1 >= p0 {
		return zeroEdge(max(off, int64(p1)*format.BlockSize), off+length)
	}
	return nil
}

// zeroRange makes the range read as zeros and leaves it allocated, with
// only records Nanos writes itself: the blocks wholly inside lose their
// extents (as a punch does), the partial blocks at the edges get zeros
// written, and then the range's holes get uninitialised extents, as
// fallocate mode 0 makes them. Without KEEP_SIZE the file grows to cover
// the range.
func (fs *FS) zeroRange(n *Node, keepSize uint32, off, length int64) error {
	if err := fs.punch(n, off, length); err != nil {
		return fmt.Errorf("zero range: punch [%d,+%d): %w", off, length, err)
	}
	if err := fs.allocate(n, keepSize, off, length); err != nil {
		return fmt.Errorf("zero range: allocate [%d,+%d): %w", off, length, err)
	}
	fs.mu.Lock()
	fs.touchLocked(n, true)
	fs.mu.Unlock()
	return nil
}

func (fs *FS) punchBlocksLocked(n *Node, p0, p1 uint64) error {
	var todo []*extent
	for i := n.find(p0); i < len(n.exts) && n.exts[i].fblock < p1; i++ {
		todo = append(todo, n.exts[i])
	}
	live := n.links > 0
	for _, e := range todo {
		lo, hi := max(p0, e.fblock), min(p1, e.end())
		if live {
			if err := fs.logRemoveExtent(n, e); err != nil {
				return err
			}
		}
		n.removeExtent(e)
		// Keep the parts of e outside [lo, hi) as extents of their own.
		if lo > e.fblock {
			l := lo - e.fblock
			x := &extent{fblock: e.fblock, dblock: e.dblock, length: l, allocated: l, uninited: e.uninited}
			n.insertExtent(x)
			if live {
				if err := fs.logNewExtent(n, x); err != nil {
					return err
				}
			}
		}
		if hi < e.end() {
			x := &extent{fblock: hi, dblock: e.dblock + (hi - e.fblock), length: e.end() - hi, allocated: e.allocated - (hi - e.fblock), uninited: e.uninited}
			n.insertExtent(x)
			if live {
				if err := fs.logNewExtent(n, x); err != nil {
					return err
				}
			}
			fs.freeAfterCommit(e.dblock+(lo-e.fblock), hi-lo)
		} else {
			fs.freeAfterCommit(e.dblock+(lo-e.fblock), e.allocated-(lo-e.fblock))
		}
	}
	return nil
}

// Seek answers SEEK_DATA and SEEK_HOLE from the extent map; uninitialised
// extents count as holes.
func (fs *FS) Seek(n *Node, off int64, whence int) (int64, error) {
	if err := checkFile(n); err != nil {
		return 0, err
	}
	if whence != seekData && whence != seekHole {
		return 0, errnoErr("seek whence", syscall.EINVAL)
	}
	if err := fs.fileData(n).Sync(); err != nil {
		return 0, err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	size := n.size.Load()
	if off < 0 || off >= size {
		return 0, errnoErr("seek past end of file", syscall.ENXIO)
	}
	pos := off
	for pos < size {
		e := n.extentAt(uint64(pos) / format.BlockSize)
		isData := e != nil && !e.uninited
		if whence == seekData && isData {
			return pos, nil
		}
		if whence == seekHole && !isData {
			return pos, nil
		}
		if e != nil {
			pos = int64(e.end()) * format.BlockSize
			continue
		}
		i := n.find(uint64(pos) / format.BlockSize)
		if i == len(n.exts) {
			pos = size
			break
		}
		pos = int64(n.exts[i].fblock) * format.BlockSize
	}
	if whence == seekHole {
		return size, nil
	}
	return 0, errnoErr("no data after offset", syscall.ENXIO)
}
