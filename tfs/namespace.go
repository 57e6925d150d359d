package tfs

import (
	"fmt"
	"syscall"
	"time"

	"github.com/tfsmount/tfsmount/pagecache"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// Directory operations (docs/format.md, "How operations appear in the log").
// Each stages its EAV records and updates the graph; parent mtimes change in
// memory and reach the log at the next flush.

// entryPrep validates dir and name for a new entry and returns dir's
// children tuple and the existing node under name, if any. Caller holds mu.
func (fs *FS) entryPrep(dir *Node, name string) (*format.Tuple, *Node, error) {
	if err := fs.checkWritable(); err != nil {
		return nil, nil, err
	}
	c, err := fs.children(dir)
	if err != nil {
		return nil, nil, err
	}
	if dir != fs.root && dir.links == 0 {
		return nil, nil, errnoErr("directory was removed", syscall.ENOENT)
	}
	if err := checkName(name); err != nil {
		return nil, nil, err
	}
	var old *Node
	if t, ok := c.Attrs[name].(*format.Tuple); ok {
		old = nodeOf(t)
	}
	return c, old, nil
}

func nowTimes(t *format.Tuple) {
	now := format.IntOf(format.Timestamp(time.Now()))
	t.Attrs["atime"] = now
	t.Attrs["mtime"] = now
}

// addEntry logs a new node under name and returns it.
func (fs *FS) addEntry(dir *Node, c *format.Tuple, name string, t *format.Tuple, k Kind) (*Node, error) {
	if err := fs.logEAV(c, name, t, false); err != nil {
		return nil, err
	}
	n := fs.newNode(t, k)
	fs.setIno(n)
	n.links = 1
	if k == KindDir {
		n.parent = dir
		dir.subdirs++
	}
	fs.touchLocked(dir, true)
	return n, nil
}

// Create makes a regular file; with !excl an existing file is returned.
func (fs *FS) Create(dir *Node, name string, excl bool) (*Node, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	c, old, err := fs.entryPrep(dir, name)
	if err != nil {
		return nil, err
	}
	if old != nil {
		switch {
		case excl:
			return nil, errnoErr(fmt.Sprintf("create %q", name), syscall.EEXIST)
		case old.kind == KindDir:
			return nil, errnoErr(fmt.Sprintf("create %q", name), syscall.EISDIR)
		}
		return old, nil
	}
	if err := checkDirChange(dir, false, fmt.Sprintf("create %q", name)); err != nil {
		return nil, err
	}
	t := format.NewTuple()
	nowTimes(t)
	t.Attrs["extents"] = format.NewTuple()
	return fs.addEntry(dir, c, name, t, KindFile)
}

// Mkdir makes a directory.
func (fs *FS) Mkdir(dir *Node, name string) (*Node, error) {
	return fs.makeEntry(dir, name, "mkdir", KindDir, func(t *format.Tuple) {
		nowTimes(t)
		t.Attrs["children"] = format.NewTuple()
	})
}

// Symlink makes a symbolic link holding target verbatim.
func (fs *FS) Symlink(dir *Node, name, target string) (*Node, error) {
	if len(target) >= 4096 {
		return nil, errnoErr("symlink target of 4096 bytes or more", syscall.ENAMETOOLONG)
	}
	if target == "" {
		return nil, errnoErr("empty symlink target", syscall.ENOENT)
	}
	return fs.makeEntry(dir, name, "symlink", KindSymlink, func(t *format.Tuple) {
		nowTimes(t)
		t.Attrs["linktarget"] = format.StrOf(target)
	})
}

// Mksock makes a (stale) UNIX socket entry, {socket: null} as Nanos' bind
// does, without times.
func (fs *FS) Mksock(dir *Node, name string) (*Node, error) {
	return fs.makeEntry(dir, name, "mksock", KindSocket, func(t *format.Tuple) {
		t.Attrs["socket"] = format.NullMarker
	})
}

// makeEntry adds a new node of the given kind under name, with the
// attributes fill sets; an existing entry of that name is EEXIST.
func (fs *FS) makeEntry(dir *Node, name, op string, kind Kind, fill func(t *format.Tuple)) (*Node, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	c, old, err := fs.entryPrep(dir, name)
	if err != nil {
		return nil, err
	}
	if old != nil {
		return nil, errnoErr(fmt.Sprintf("%s %q", op, name), syscall.EEXIST)
	}
	if err := checkDirChange(dir, false, fmt.Sprintf("%s %q", op, name)); err != nil {
		return nil, err
	}
	t := format.NewTuple()
	fill(t)
	return fs.addEntry(dir, c, name, t, kind)
}

// Link adds a hard link to n (not a directory).
func (fs *FS) Link(n, dir *Node, name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	c, old, err := fs.entryPrep(dir, name)
	if err != nil {
		return err
	}
	if n.kind == KindDir {
		return errnoErr("hard link to a directory", syscall.EPERM)
	}
	if old != nil {
		return errnoErr(fmt.Sprintf("link %q", name), syscall.EEXIST)
	}
	if n.links == 0 {
		return errnoErr("link to a removed file", syscall.ENOENT)
	}
	if err := checkUnsealed(n, fmt.Sprintf("link %q", name)); err != nil {
		return err
	}
	if err := checkDirChange(dir, false, fmt.Sprintf("link %q", name)); err != nil {
		return err
	}
	if err := fs.logEAV(c, name, n.t, true); err != nil {
		return err
	}
	n.links++
	fs.touchLocked(dir, true)
	return fs.logEAV(n.t, "nlink", format.IntOf(uint64(n.links)), false)
}

// Unlink removes a non-directory entry.
func (fs *FS) Unlink(dir *Node, name string) error {
	fs.mu.Lock()
	c, n, err := fs.entryPrep(dir, name)
	if err == nil && n == nil {
		err = errnoErr(fmt.Sprintf("unlink %q", name), syscall.ENOENT)
	}
	if err == nil && n.kind == KindDir {
		err = errnoErr(fmt.Sprintf("unlink %q", name), syscall.EISDIR)
	}
	if err == nil {
		err = checkRemove(dir, n, fmt.Sprintf("unlink %q", name))
	}
	if err == nil {
		err = fs.logEAV(c, name, nil, false)
	}
	var drop *pagecache.Node
	if err == nil {
		fs.touchLocked(dir, true)
		drop, err = fs.unrefLocked(n)
	}
	fs.mu.Unlock()
	fs.finishDrop(n, drop)
	return err
}

// unrefLocked drops one directory reference to n. When the last goes and
// the file is not open, its cache handle is returned for finishDrop.
func (fs *FS) unrefLocked(n *Node) (*pagecache.Node, error) {
	n.links--
	if n.links > 0 {
		return nil, fs.logEAV(n.t, "nlink", format.IntOf(uint64(n.links)), false)
	}
	fs.forgetIno(n)
	if n.kind != KindFile {
		return nil, nil
	}
	delete(fs.dirty, n)
	if n.opens > 0 {
		n.orphan = true // the last Release frees it
		fs.orphans++
		return nil, nil
	}
	fd := takeFileDataLocked(n)
	if fd == nil {
		fs.dropFileLocked(n)
	}
	return fd, nil
}

// finishDrop discards the cached pages of a removed file, waiting for any
// write-back, and only then frees its blocks. Called without mu.
func (fs *FS) finishDrop(n *Node, fd *pagecache.Node) {
	if fd == nil {
		return
	}
	dropCached(fd)
	fs.mu.Lock()
	fs.dropFileLocked(n)
	fs.mu.Unlock()
}

// dropCached discards the cached pages of a removed file (fd may be nil),
// waiting for any write-back to its blocks; only then may they be freed.
func dropCached(fd *pagecache.Node) {
	if fd == nil {
		return
	}
	fd.Truncate(0)
	fd.Drop()
}

// Rmdir removes an empty directory.
func (fs *FS) Rmdir(dir *Node, name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	c, n, err := fs.entryPrep(dir, name)
	if err != nil {
		return err
	}
	if n == nil {
		return errnoErr(fmt.Sprintf("rmdir %q", name), syscall.ENOENT)
	}
	if n.kind != KindDir {
		return errnoErr(fmt.Sprintf("rmdir %q", name), syscall.ENOTDIR)
	}
	if err := checkRemove(dir, n, fmt.Sprintf("rmdir %q", name)); err != nil {
		return err
	}
	if cc, _ := n.t.Attrs["children"].(*format.Tuple); cc != nil && len(cc.Attrs) > 0 {
		return errnoErr(fmt.Sprintf("rmdir %q", name), syscall.ENOTEMPTY)
	}
	if err := fs.logEAV(c, name, nil, false); err != nil {
		return err
	}
	n.links = 0
	fs.forgetIno(n)
	dir.subdirs--
	fs.touchLocked(dir, true)
	return nil
}

// checkRemove refuses to take n's name away from dir if either forbids it
// (as may_delete does).
func checkRemove(dir, n *Node, op string) error {
	if err := checkDirChange(dir, true, op); err != nil {
		return err
	}
	return checkUnsealed(n, op)
}

// checkRename applies checkRemove to what a rename takes away: src's name
// in odir, and dst's in ndir when it is replaced or exchanged; ndir gains
// an entry.
func checkRename(odir, src, ndir, dst *Node, flags RenameFlags, oname string) error {
	op := fmt.Sprintf("rename %q", oname)
	if err := checkRemove(odir, src, op); err != nil {
		return err
	}
	if dst != nil && flags&RenameNoReplace == 0 {
		return checkRemove(ndir, dst, op)
	}
	return checkDirChange(ndir, false, op)
}

// isAncestor reports whether a is d or one of d's ancestors.
func isAncestor(a, d *Node) bool {
	for i := 0; i < 1<<20; i++ {
		if d == a {
			return true
		}
		if d.parent == d || d.parent == nil {
			return false
		}
		d = d.parent
	}
	return true // a parent chain this long is broken: refuse
}

// Rename moves oname in odir to nname in ndir (renameat2 semantics). The
// moved node costs only children EAVs that name it by a shallow reference,
// never its subtree (docs/format.md, "How operations appear in the log").
func (fs *FS) Rename(odir *Node, oname string, ndir *Node, nname string, flags RenameFlags) error {
	if flags&RenameWhiteout != 0 || flags&^(RenameNoReplace|RenameExchange) != 0 {
		return errnoErr("rename flags", syscall.EINVAL)
	}
	if flags == RenameNoReplace|RenameExchange {
		return errnoErr("RENAME_NOREPLACE with RENAME_EXCHANGE", syscall.EINVAL)
	}
	fs.mu.Lock()
	if err := fs.checkWritable(); err != nil {
		fs.mu.Unlock()
		return err
	}
	oc, err := fs.children(odir)
	if err != nil {
		fs.mu.Unlock()
		return err
	}
	var src *Node
	if t, ok := oc.Attrs[oname].(*format.Tuple); ok {
		src = nodeOf(t)
	}
	if src == nil {
		fs.mu.Unlock()
		return errnoErr(fmt.Sprintf("rename %q", oname), syscall.ENOENT)
	}
	nc, dst, err := fs.entryPrep(ndir, nname)
	if err != nil {
		fs.mu.Unlock()
		return err
	}
	err = checkRename(odir, src, ndir, dst, flags, oname)
	var drop *pagecache.Node
	if err == nil {
		err = fs.renameLocked(odir, oc, oname, src, ndir, nc, nname, dst, flags, &drop)
	}
	fs.mu.Unlock()
	if dst != nil {
		fs.finishDrop(dst, drop)
	}
	return err
}

func (fs *FS) renameLocked(odir *Node, oc *format.Tuple, oname string, src *Node, ndir *Node, nc *format.Tuple, nname string, dst *Node, flags RenameFlags, drop **pagecache.Node) error {
	if src.kind == KindDir && isAncestor(src, ndir) {
		return errnoErr("move a directory into itself", syscall.EINVAL)
	}
	if flags&RenameExchange != 0 {
		if dst == nil {
			return errnoErr(fmt.Sprintf("exchange with %q", nname), syscall.ENOENT)
		}
		if dst.kind == KindDir && isAncestor(dst, odir) {
			return errnoErr("move a directory into itself", syscall.EINVAL)
		}
		if src == dst {
			return nil
		}
		if err := fs.logEAV(nc, nname, src.t, true); err != nil {
			return err
		}
		if err := fs.logEAV(oc, oname, dst.t, true); err != nil {
			return err
		}
		if src.kind == KindDir {
			src.parent = ndir
			odir.subdirs--
			ndir.subdirs++
		}
		if dst.kind == KindDir {
			dst.parent = odir
			ndir.subdirs--
			odir.subdirs++
		}
		fs.touchLocked(odir, true)
		fs.touchLocked(ndir, true)
		return nil
	}
	if dst != nil {
		if flags&RenameNoReplace != 0 {
			return errnoErr(fmt.Sprintf("rename onto %q", nname), syscall.EEXIST)
		}
		if dst == src {
			return nil // two links to one file: POSIX says do nothing
		}
		switch {
		case src.kind == KindDir && dst.kind != KindDir:
			return errnoErr(fmt.Sprintf("rename a directory onto %q", nname), syscall.ENOTDIR)
		case src.kind != KindDir && dst.kind == KindDir:
			return errnoErr(fmt.Sprintf("rename onto directory %q", nname), syscall.EISDIR)
		case dst.kind == KindDir:
			if cc, _ := dst.t.Attrs["children"].(*format.Tuple); cc != nil && len(cc.Attrs) > 0 {
				return errnoErr(fmt.Sprintf("rename onto %q", nname), syscall.ENOTEMPTY)
			}
		}
	}
	// The new entry first, then the old one goes; both go out in one log
	// write (docs/crash-ordering.md,
	// "Rule 1: one block publishes a log write").
	if err := fs.logEAV(nc, nname, src.t, true); err != nil {
		return err
	}
	if err := fs.logEAV(oc, oname, nil, false); err != nil {
		return err
	}
	if src.kind == KindDir {
		src.parent = ndir
		odir.subdirs--
		ndir.subdirs++
	}
	fs.touchLocked(odir, true)
	fs.touchLocked(ndir, true)
	if dst != nil {
		if dst.kind == KindDir {
			dst.links = 0
			fs.forgetIno(dst)
			ndir.subdirs--
			return nil
		}
		fd, err := fs.unrefLocked(dst)
		*drop = fd
		return err
	}
	return nil
}
