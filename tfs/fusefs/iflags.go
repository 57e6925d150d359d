package fusefs

import (
	"context"
	"encoding/binary"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"

	"github.com/tfsmount/tfsmount/tfs"
)

// Inode flags (chattr, lsattr, xfs_io chattr): the kernel turns both ways
// of asking (FS_IOC_{GET,SET}FLAGS with Linux flag bits, and
// FS_IOC_FS{GET,SET}XATTR with an fsxattr of XFS flag bits) into an ioctl
// of the same name, after checking that the caller owns the node and, for
// immutable and append-only, holds CAP_LINUX_IMMUTABLE. tfs stores and
// enforces the flags.
const (
	fsIocGetFlags   = 0x80086601 // _IOR('f', 1, long)
	fsIocSetFlags   = 0x40086602 // _IOW('f', 2, long)
	fsIocFsGetXattr = 0x801c581f // _IOR('X', 31, struct fsxattr)
	fsIocFsSetXattr = 0x401c5820 // _IOW('X', 32, struct fsxattr)
	fsxattrSize     = 28
)

// The XFS flag bits of fsxattr.fsx_xflags that match tfs's flags.
var xflagOf = []struct{ linux, xfs uint32 }{
	{tfs.FlagImmutable, 0x8},
	{tfs.FlagAppend, 0x10},
	{tfs.FlagNoAtime, 0x40},
	{tfs.FlagNoDump, 0x80},
}

var _ = (fs.NodeIoctler)((*node)(nil))

func (n *node) Ioctl(ctx context.Context, f fs.FileHandle, cmd uint32, arg uint64, input, output []byte) (int32, syscall.Errno) {
	m := n.m
	switch cmd {
	case fsIocGetFlags:
		if len(output) < 4 {
			return 0, syscall.EINVAL
		}
		binary.LittleEndian.PutUint32(output, m.fs.InodeFlags(n.tn))
		return 0, 0
	case fsIocSetFlags:
		if len(input) < 4 {
			return 0, syscall.EINVAL
		}
		return 0, n.setInodeFlags(binary.LittleEndian.Uint32(input))
	case fsIocFsGetXattr:
		if len(output) < fsxattrSize {
			return 0, syscall.EINVAL
		}
		clear(output)
		flags, x := m.fs.InodeFlags(n.tn), uint32(0)
		for _, b := range xflagOf {
			if flags&b.linux != 0 {
				x |= b.xfs
			}
		}
		binary.LittleEndian.PutUint32(output, x)
		return 0, 0
	case fsIocFsSetXattr:
		if len(input) < fsxattrSize {
			return 0, syscall.EINVAL
		}
		x, flags := binary.LittleEndian.Uint32(input), uint32(0)
		for _, b := range xflagOf {
			if x&b.xfs != 0 {
				flags |= b.linux
				x &^= b.xfs
			}
		}
		// Extent size hints, project ids and other XFS flags have
		// nowhere to go.
		if x != 0 || binary.LittleEndian.Uint32(input[4:]) != 0 || binary.LittleEndian.Uint32(input[12:]) != 0 {
			return 0, syscall.EOPNOTSUPP
		}
		return 0, n.setInodeFlags(flags)
	}
	return 0, syscall.ENOTTY
}

func (n *node) setInodeFlags(flags uint32) syscall.Errno {
	if err := n.m.fs.SetInodeFlags(n.tn, flags); err != nil {
		return n.m.toErrno("set inode flags", err)
	}
	n.m.touchCtime(n.tn)
	return 0
}
