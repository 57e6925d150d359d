package tfs

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/tfsmount/tfsmount/pagecache"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// Regular file data: reads and writes go through the data cache (the
// pagecache), which calls back into backing for the block map.

// fileData returns n's cache handle, creating it on first use. The common
// case takes no lock: reads and writes of different files share nothing.
func (fs *FS) fileData(n *Node) *pagecache.Node {
	if fd := n.fd.Load(); fd != nil {
		return fd
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.fileDataLocked(n)
}

// fileDataLocked is fileData with fs.mu held.
func (fs *FS) fileDataLocked(n *Node) *pagecache.Node {
	if n.fd.Load() == nil {
		n.fd.Store(fs.data.NewNode(backing{fs, n}))
	}
	return n.fd.Load()
}

// takeFileDataLocked detaches n's cache handle (nil if it has none) for
// dropping.
func takeFileDataLocked(n *Node) *pagecache.Node {
	return n.fd.Swap(nil)
}

func checkFile(n *Node) error {
	switch n.kind {
	case KindFile:
		return nil
	case KindDir:
		return errnoErr("is a directory", syscall.EISDIR)
	}
	return errnoErr("not a regular file", syscall.EINVAL)
}

// Open notes an open reference: an unlinked file keeps its data until the
// last Release.
func (fs *FS) Open(n *Node) {
	fs.mu.Lock()
	n.opens++
	fs.mu.Unlock()
}

// Release drops an open reference; the last one of an unlinked file frees
// its blocks and cached pages.
func (fs *FS) Release(n *Node) {
	fs.mu.Lock()
	if n.opens > 0 {
		n.opens--
	}
	gone := n.opens == 0 && n.orphan
	var fd *pagecache.Node
	if gone {
		n.orphan = false
		fd = takeFileDataLocked(n)
	}
	fs.mu.Unlock()
	if !gone {
		return
	}
	dropCached(fd)
	fs.mu.Lock()
	fs.dropFileLocked(n)
	fs.orphans--
	close(fs.orphanFreed)
	fs.orphanFreed = make(chan struct{})
	fs.mu.Unlock()
}

// orphanWaits is how many times an allocation that found no space waits
// for an unlinked open file to be released, and orphanWait how long each.
const (
	orphanWaits = 3
	orphanWait  = 100 * time.Millisecond
)

// allocWaitingForOrphans runs alloc and, while it fails for lack of space
// that is about to come back, makes it come back and runs alloc again:
//   - blocks freed by records not yet durable return once a log write
//     makes them so (ordering rule 3), so the log is written now;
//   - a file unlinked while open keeps its blocks until its last release,
//     and the kernel sends RELEASE only after close(2) has returned: "rm
//     big; cp new ." right after a close would otherwise fail with ENOSPC,
//     so it waits a little for that release.
//
// Like ext4 retrying an allocation after a journal commit. With neither,
// ENOSPC comes at once.
func (fs *FS) allocWaitingForOrphans(alloc func() error) error {
	for attempt := 0; ; attempt++ {
		err := alloc()
		if !errors.Is(err, syscall.ENOSPC) {
			return err
		}
		fs.mu.Lock()
		freeing := fs.freeingBlocks > 0
		fs.mu.Unlock()
		if freeing && attempt < orphanWaits+1 {
			if ferr := fs.flushLog(false, nil); ferr != nil {
				return errors.Join(err, ferr)
			}
			continue
		}
		if !fs.waitForOrphan(attempt) {
			return err
		}
	}
}

// waitForOrphan waits for the next release of a file unlinked while open,
// or orphanWait, and reports whether that is worth a retry (attempt counts
// from 0).
func (fs *FS) waitForOrphan(attempt int) bool {
	fs.mu.Lock()
	orphans, freed := fs.orphans, fs.orphanFreed
	fs.mu.Unlock()
	if orphans == 0 || attempt >= orphanWaits {
		return false
	}
	t := time.NewTimer(orphanWait)
	defer t.Stop()
	select {
	case <-freed:
	case <-t.C:
	}
	return true
}

// dropFileLocked frees every block and reservation of a file that no
// directory references.
func (fs *FS) dropFileLocked(n *Node) {
	for _, e := range n.exts {
		fs.freeAfterCommit(e.dblock, e.allocated)
	}
	n.exts = nil
	fs.reserved -= min(fs.reserved, n.resv.total())
	n.resv = blockSet{}
	delete(fs.dirty, n)
}

// Read reads file bytes at off; short only at EOF.
func (fs *FS) Read(n *Node, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errnoErr("negative offset", syscall.EINVAL)
	}
	if err := checkFile(n); err != nil {
		return 0, err
	}
	fd := fs.fileData(n)
	size := n.size.Load()
	if off >= size {
		return 0, nil
	}
	return fd.Read(p[:min(int64(len(p)), size-off)], off, size)
}

// Prefetch starts reading the first max bytes of regular file n into the
// cache without waiting, for a reader expected soon (fusefs prefetches the
// files after the one a tree walker reads). A node that is not a linked
// regular file is left alone.
func (fs *FS) Prefetch(n *Node, max int64) {
	fs.mu.Lock()
	if n.kind != KindFile || n.links <= 0 {
		fs.mu.Unlock()
		return
	}
	fd := fs.fileDataLocked(n)
	fs.mu.Unlock()
	// An unlink from here on is the same race as one during a Read: the
	// cache handle it drops may still be filled; nothing reads it after.
	if size := n.size.Load(); size > 0 {
		fd.Prefetch(0, min(size, max), size)
	}
}

// Write writes p at off, extending the file if needed.
func (fs *FS) Write(n *Node, p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) < off || off+int64(len(p)) > MaxFileSize {
		return 0, errnoErr("offset out of range", syscall.EINVAL)
	}
	if err := checkFile(n); err != nil {
		return 0, err
	}
	if err := fs.checkWritable(); err != nil {
		return 0, err
	}
	if f := n.iflags.Load(); f&FlagImmutable != 0 {
		return 0, checkUnsealed(n, "write")
	}
	fd := fs.fileData(n)
	size := n.size.Load()
	if len(p) == 0 {
		return 0, nil
	}
	if off+int64(len(p)) > size {
		// A write past the end zeroes the old last block's tail and
		// moves the end. Two at once (the kernel's write-back sends
		// several with writeback_cache) could zero what the other just
		// wrote there, so they take turns, each with the size the one
		// before it left.
		n.extend.Lock()
		defer n.extend.Unlock()
		size = n.size.Load()
	}
	if n.iflags.Load()&FlagAppend != 0 && off != size {
		return 0, errnoErr(fmt.Sprintf("write at %d of a %d-byte append-only file: only at its end", off, size), syscall.EPERM)
	}
	if off > size {
		if err := fs.zeroTail(n, fd, size, off); err != nil {
			return 0, err
		}
	}
	k, err := fd.Write(p, off, size)
	fs.mu.Lock()
	if w := off + int64(k); w > n.size.Load() {
		n.size.Store(w)
	}
	if k > 0 {
		fs.touchLocked(n, true)
	}
	fs.mu.Unlock()
	return k, err
}

// zeroTail zeroes, through the cache, the bytes after the old end of file
// in its last block when the file grows past it, so stale bytes that the
// block held beyond EOF never become file content.
func (fs *FS) zeroTail(n *Node, fd *pagecache.Node, size, upto int64) error {
	if size%format.BlockSize == 0 {
		return nil
	}
	fs.mu.Lock()
	e := n.extentAt(uint64(size) / format.BlockSize)
	fs.mu.Unlock()
	if e == nil {
		return nil
	}
	z := make([]byte, min(upto, (size+format.BlockSize-1)/format.BlockSize*format.BlockSize)-size)
	if _, err := fd.Write(z, size, size); err != nil {
		return fmt.Errorf("zero the tail of the last block: %w", err)
	}
	return nil
}

// touchLocked updates mtime (and atime when asked) in memory; the values
// reach the log at the next flush.
func (fs *FS) touchLocked(n *Node, modify bool) {
	now := format.IntOf(format.Timestamp(time.Now()))
	if modify {
		n.t.Attrs["mtime"] = now
	}
	if _, ok := n.t.Attrs["atime"]; !ok || !modify {
		n.t.Attrs["atime"] = now
	}
	n.timesDirty = true
	fs.dirty[n] = true
}

// Truncate sets the file size. Shrinking frees the extents past the new
// end and shortens a straddling one, so no stale bytes can reappear.
func (fs *FS) Truncate(n *Node, size int64) error {
	if size < 0 || size > MaxFileSize {
		return errnoErr("size out of range", syscall.EINVAL)
	}
	if err := checkFile(n); err != nil {
		return err
	}
	if err := checkUnsealed(n, "truncate"); err != nil {
		return err
	}
	n.extend.Lock() // it moves the end of file (see Write)
	defer n.extend.Unlock()
	fd := fs.fileData(n)
	fs.mu.Lock()
	if err := fs.checkWritable(); err != nil {
		fs.mu.Unlock()
		return err
	}
	old := n.size.Load()
	fs.mu.Unlock()
	if size > old {
		if err := fs.zeroTail(n, fd, old, size); err != nil {
			return err
		}
		fs.mu.Lock()
		n.size.Store(max(n.size.Load(), size))
		fs.touchLocked(n, true)
		fs.mu.Unlock()
		return nil
	}
	fd.Truncate(size)
	if err := fd.Sync(); err != nil {
		return err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n.size.Store(size)
	fs.touchLocked(n, true)
	// Stage the new length before the extents go, so a reader never sees
	// a length covering removed blocks.
	if n.links > 0 {
		if err := fs.logEAV(n.t, "filelength", format.IntOf(uint64(size)), false); err != nil {
			return err
		}
		n.loggedSize = size
	}
	return fs.cutExtentsLocked(n, (uint64(size)+format.BlockSize-1)/format.BlockSize)
}

// cutExtentsLocked removes file blocks from keep onwards.
func (fs *FS) cutExtentsLocked(n *Node, keep uint64) error {
	fs.releaseReservation(n, keep, ^uint64(0))
	for len(n.exts) > 0 {
		e := n.exts[len(n.exts)-1]
		if e.end() <= keep && e.allocated == e.length {
			break
		}
		if e.fblock >= keep {
			n.exts = n.exts[:len(n.exts)-1]
			fs.freeAfterCommit(e.dblock, e.allocated)
			if n.links > 0 {
				if err := fs.logRemoveExtent(n, e); err != nil {
					return err
				}
			}
			continue
		}
		nl := min(e.length, keep-e.fblock)
		fs.freeAfterCommit(e.dblock+nl, e.allocated-nl)
		e.length, e.allocated = nl, nl
		if e.t != nil && n.links > 0 {
			if err := fs.logExtentSize(n, e); err != nil {
				return err
			}
		}
		break
	}
	return nil
}

// Fsync writes n's data, then the log, then flushes the device. With
// dataOnly (fdatasync) only what reading the data back needs is logged:
// n's size if it changed, and whatever records are staged (n's new
// extents are among them, staged when its write-back committed). Times,
// of n and of other nodes, stay in memory for the next flush, so an
// fdatasync after overwriting data in place costs the data writes and a
// device flush, not a log write.
func (fs *FS) Fsync(n *Node, dataOnly bool) error {
	if fs.ro {
		return nil
	}
	if n.kind != KindFile {
		// fsync of a directory: like syncfs (docs/crash-ordering.md,
		// "Rule 4: what fsync, fdatasync and syncfs promise").
		return fs.flush(true)
	}
	derr := fs.fileData(n).Sync()
	if dataOnly {
		return fs.flushFileLog(n, derr)
	}
	return fs.flushLog(true, derr)
}

// flushFileLog is flushLog for fdatasync of n: it stages n's size alone
// (not the dirty sizes and times of every node), writes the log only if
// something is staged, and always flushes the device.
func (fs *FS) flushFileLog(n *Node, derr error) error {
	fs.logIO.Lock()
	defer fs.logIO.Unlock()
	return fs.writeLog(true, derr, func() error {
		if n.links > 0 && n.size.Load() != n.loggedSize {
			if err := fs.logEAV(n.t, "filelength", format.IntOf(uint64(n.size.Load())), false); err != nil {
				return err
			}
			n.loggedSize = n.size.Load()
		}
		return nil
	})
}
