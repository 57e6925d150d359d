package fusefs

import (
	"context"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
)

// Only user.* attributes are served. Linux gives the other namespaces
// meaning (security.* to LSMs, system.* to ACLs, trusted.* to root) that a
// TFS string attribute cannot honour, so those are EOPNOTSUPP.
const userPrefix = "user."

func xattrAllowed(name string) bool {
	return strings.HasPrefix(name, userPrefix) && len(name) > len(userPrefix)
}

var _ = (fs.NodeGetxattrer)((*node)(nil))

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if !xattrAllowed(attr) {
		return 0, syscall.EOPNOTSUPP
	}
	v, err := n.m.fs.GetXattr(n.tn, attr)
	if err != nil {
		return 0, n.m.toErrno("getxattr", err)
	}
	if len(dest) < len(v) {
		// A zero-sized buffer asks for the size; go-fuse turns ERANGE
		// with the size into the right reply either way.
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

var _ = (fs.NodeSetxattrer)((*node)(nil))

// Setxattr passes XATTR_CREATE and XATTR_REPLACE (flags) to tfs.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if !xattrAllowed(attr) {
		return syscall.EOPNOTSUPP
	}
	if err := n.m.fs.SetXattr(n.tn, attr, data, int(flags)); err != nil {
		return n.m.toErrno("setxattr", err)
	}
	n.m.touchCtime(n.tn)
	return 0
}

var _ = (fs.NodeRemovexattrer)((*node)(nil))

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if !xattrAllowed(attr) {
		return syscall.EOPNOTSUPP
	}
	if err := n.m.fs.RemoveXattr(n.tn, attr); err != nil {
		return n.m.toErrno("removexattr", err)
	}
	n.m.touchCtime(n.tn)
	return 0
}

var _ = (fs.NodeListxattrer)((*node)(nil))

// Listxattr lists the user.* attributes as NUL-terminated names.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	names, err := n.m.fs.ListXattr(n.tn)
	if err != nil {
		return 0, n.m.toErrno("listxattr", err)
	}
	var b []byte
	for _, name := range names {
		if xattrAllowed(name) {
			b = append(b, name...)
			b = append(b, 0)
		}
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}
