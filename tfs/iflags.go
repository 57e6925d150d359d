package tfs

import (
	"fmt"
	"syscall"

	"github.com/tfsmount/tfsmount/tfs/format"
)

// Inode flags, as chattr sets them (FS_IOC_SETFLAGS). They are kept in the
// node's tuple under inodeFlagsAttr as an integer of these Linux bits, an
// attribute Nanos does not read (it neither shows nor enforces them), and
// tfs enforces the two that restrict, on every path that changes a node:
//
//   - immutable: no change to the node at all: data, size, times, flags,
//     xattrs, its names (unlink, rename, link), and, for a directory, its
//     entries;
//   - append-only: data may only be added at the end (a write at the old
//     end of file; fallocate that keeps the size), nothing else changes;
//     a directory may gain entries but lose none.
//
// Only a caller with CAP_LINUX_IMMUTABLE may set or clear these two: the
// kernel checks that before it asks (vfs_fileattr_set).
const (
	FlagImmutable uint32 = 0x10 // FS_IMMUTABLE_FL
	FlagAppend    uint32 = 0x20 // FS_APPEND_FL
	FlagNoDump    uint32 = 0x40 // FS_NODUMP_FL: stored for dump(8), no effect here
	FlagNoAtime   uint32 = 0x80 // FS_NOATIME_FL: stored; tfsmount never updates atime on reads anyway

	// InodeFlagsKept are the flags a node can hold; asking for any other
	// is EOPNOTSUPP.
	InodeFlagsKept = FlagImmutable | FlagAppend | FlagNoDump | FlagNoAtime
)

const inodeFlagsAttr = "inode_flags"

// loadInodeFlags reads n's flags from its tuple into n.iflags.
func (n *Node) loadInodeFlags() {
	v, _ := format.NumberOf(n.t.Attrs[inodeFlagsAttr])
	n.iflags.Store(uint32(v) & InodeFlagsKept)
}

// InodeFlags returns n's inode flags (FS_*_FL bits).
func (fs *FS) InodeFlags(n *Node) uint32 { return n.iflags.Load() }

// SetInodeFlags sets n's inode flags to flags.
func (fs *FS) SetInodeFlags(n *Node, flags uint32) error {
	if flags&^InodeFlagsKept != 0 {
		return errnoErr(fmt.Sprintf("inode flags %#x: only immutable, append-only, nodump and noatime are kept", flags&^InodeFlagsKept), syscall.EOPNOTSUPP)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.checkWritable(); err != nil {
		return err
	}
	if n.iflags.Load() == flags {
		return nil
	}
	var v format.Value
	if flags != 0 {
		v = format.IntOf(uint64(flags))
	}
	if err := fs.logEAV(n.t, inodeFlagsAttr, v, false); err != nil {
		return err
	}
	n.iflags.Store(flags)
	return nil
}

// checkUnsealed refuses any change to n if it is immutable or append-only
// (what stays allowed on an append-only node is checked where it happens).
func checkUnsealed(n *Node, op string) error {
	if f := n.iflags.Load(); f&(FlagImmutable|FlagAppend) != 0 {
		what := "immutable"
		if f&FlagImmutable == 0 {
			what = "append-only"
		}
		return errnoErr(fmt.Sprintf("%s: the node is %s", op, what), syscall.EPERM)
	}
	return nil
}

// checkDirChange refuses a change to dir's entries that its flags forbid:
// any on an immutable directory, a removal on an append-only one.
func checkDirChange(dir *Node, removal bool, op string) error {
	f := dir.iflags.Load()
	switch {
	case f&FlagImmutable != 0:
		return errnoErr(fmt.Sprintf("%s: the directory is immutable", op), syscall.EPERM)
	case f&FlagAppend != 0 && removal:
		return errnoErr(fmt.Sprintf("%s: the directory is append-only", op), syscall.EPERM)
	}
	return nil
}
