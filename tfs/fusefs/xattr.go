package fusefs

import (
	"context"
	"encoding/binary"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The namespaces stored: user.*, and trusted.* and security.*, which the
// kernel lets only privileged callers set (trusted.* needs CAP_SYS_ADMIN,
// security.* whatever the security modules ask), so storing them is all
// that is needed here. system.* means ACLs (see Setxattr); nothing else
// is a Linux namespace.
var xattrPrefixes = []string{"user.", "trusted.", "security."}

func xattrAllowed(name string) bool {
	for _, p := range xattrPrefixes {
		if strings.HasPrefix(name, p) && len(name) > len(p) {
			return true
		}
	}
	return false
}

// xattrVisible reports whether name is listed to the caller: the kernel
// hides trusted.* from the unprivileged when it reads one, so listing
// does too.
func xattrVisible(ctx context.Context, name string) bool {
	if !strings.HasPrefix(name, "trusted.") {
		return true
	}
	c, ok := fuse.FromContext(ctx)
	return !ok || c.Uid == 0
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

// Setxattr passes XATTR_CREATE and XATTR_REPLACE (flags) to tfs. An
// access ACL that only restates a mode (owner, group and other entries, as
// cp -a and rsync -A set on every file) is a chmod, and is done as one; any
// other ACL is EOPNOTSUPP, which tells those tools that ACLs are not kept
// here.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if attr == aclAccess {
		mode, ok := minimalACLMode(data)
		if !ok {
			return syscall.EOPNOTSUPP
		}
		exec, readonly, errno := n.chmodFlags(mode)
		if errno == 0 {
			errno = n.setFlags(exec, readonly)
		}
		if errno == 0 {
			n.m.touchCtime(n.tn)
		}
		return errno
	}
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

// Removexattr of an ACL succeeds: no node has one beyond its mode, which
// is what removing one leaves. (cp -a removes a copied directory's default
// ACL after setting its access ACL, and fails if that fails.)
func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if attr == aclAccess || attr == aclDefault {
		return 0
	}
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

// Listxattr lists the stored attributes as NUL-terminated names.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	names, err := n.m.fs.ListXattr(n.tn)
	if err != nil {
		return 0, n.m.toErrno("listxattr", err)
	}
	var b []byte
	for _, name := range names {
		if xattrAllowed(name) && xattrVisible(ctx, name) {
			b = append(b, name...)
			b = append(b, 0)
		}
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

// The attributes that carry POSIX access and default ACLs.
const (
	aclAccess  = "system.posix_acl_access"
	aclDefault = "system.posix_acl_default"
)

// minimalACLMode decodes a POSIX ACL in its xattr form (a version 2 header,
// then 8-byte entries: tag, permissions, id, little-endian) and returns the
// mode it amounts to if it has exactly the three entries a mode has.
func minimalACLMode(b []byte) (uint32, bool) {
	const (
		version  = 2
		userObj  = 0x01
		groupObj = 0x04
		other    = 0x20
	)
	if len(b) != 4+3*8 || binary.LittleEndian.Uint32(b) != version {
		return 0, false
	}
	var mode uint32
	seen := 0
	for e := b[4:]; len(e) > 0; e = e[8:] {
		tag, perm := binary.LittleEndian.Uint16(e), uint32(binary.LittleEndian.Uint16(e[2:]))
		if perm > 7 || seen&int(tag) != 0 {
			return 0, false // a bad permission, or a tag twice
		}
		seen |= int(tag)
		switch tag {
		case userObj:
			mode |= perm << 6
		case groupObj:
			mode |= perm << 3
		case other:
			mode |= perm
		default:
			return 0, false
		}
	}
	return mode, true
}
