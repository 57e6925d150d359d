package fusefs

import (
	"context"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tfsmount/tfsmount/tfs"
)

// node is one TFS node in the kernel's view. Hard links share one tfs.Node
// and one inode number, so go-fuse gives them one node.
//
// Invariant: tn never changes; the node's file type (StableAttr.Mode) is
// the type of tn, which TFS never changes either.
type node struct {
	fs.Inode
	m  *mount
	tn *tfs.Node
	// heldOpen: with Config.NoOpen, this node lost its last link while the
	// kernel knew it, and holds a tfs open reference until the kernel
	// forgets it (noopen.go).
	heldOpen atomic.Bool
	// listing: a directory's last listing, for prefetching the files a
	// tree walk reads next (prefetch.go).
	listing atomic.Pointer[dirListing]
}

// kindMode is the S_IF* type bits of k.
func kindMode(k tfs.Kind) uint32 {
	switch k {
	case tfs.KindDir:
		return syscall.S_IFDIR
	case tfs.KindSymlink:
		return syscall.S_IFLNK
	case tfs.KindSocket:
		return syscall.S_IFSOCK
	}
	return syscall.S_IFREG
}

// permBits is the permission part of the mode shown for a node with a.
func (m *mount) permBits(a *tfs.Attr) uint32 {
	mask := m.cfg.Umask & 0777
	switch a.Kind {
	case tfs.KindDir:
		return 0777 &^ mask
	case tfs.KindSymlink:
		return 0777
	case tfs.KindSocket:
		return 0444 &^ mask
	}
	p := uint32(0666)
	if a.Exec {
		p |= 0111
	}
	if a.ReadOnly {
		p &^= 0222
	}
	return p &^ mask
}

// fillAttr writes what stat shows of tn into out and returns tn's
// generation.
func (m *mount) fillAttr(tn *tfs.Node, out *fuse.Attr) uint32 {
	a := m.fs.Getattr(tn)
	out.Ino = a.Ino
	out.Mode = kindMode(a.Kind) | m.permBits(&a)
	out.Size = uint64(max(a.Size, 0))
	out.Blocks = uint64(max(a.Blocks, 0))
	out.Blksize = 4096
	// tfs counts 2 + subdirectories for directories, and links for the
	// rest (0 for an unlinked file that is still open).
	out.Nlink = a.Nlink
	out.Uid = m.cfg.UID
	out.Gid = m.cfg.GID
	atime, mtime := orEpoch(a.Atime), orEpoch(a.Mtime)
	ctime := m.ctime(tn, mtime)
	out.SetTimes(&atime, &mtime, &ctime)
	return a.Gen
}

// newChild returns the kernel node for tn, a child of n, and fills out.
func (n *node) newChild(ctx context.Context, tn *tfs.Node, out *fuse.EntryOut) *fs.Inode {
	gen := n.m.fillAttr(tn, &out.Attr)
	child := &node{m: n.m, tn: tn}
	return n.NewInode(ctx, child, fs.StableAttr{Mode: out.Attr.Mode & syscall.S_IFMT, Ino: out.Attr.Ino, Gen: uint64(gen)})
}

// File handles (name_to_handle_at, NFS export): the kernel keeps a node's
// number and generation, which tfs keeps stable across mounts (tfs/ino.go).
// Once the kernel has forgotten the node, it asks for "." of that number
// (LookupNode) and, for a directory, ".." (LookupParent) to reconnect it.

var _ = (fs.NodeLookupNoder)((*node)(nil))

// LookupNode finds a node by number; go-fuse calls it on the root only.
func (n *node) LookupNode(ctx context.Context, ino uint64, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	tn, err := n.m.fs.NodeByIno(ino)
	if err != nil {
		return nil, n.m.toErrno("lookup by handle", err)
	}
	return n.newChild(ctx, tn, out), 0
}

var _ = (fs.NodeLookupParenter)((*node)(nil))

func (n *node) LookupParent(ctx context.Context, out *fuse.EntryOut) (*fs.Inode, string, syscall.Errno) {
	p, name, err := n.m.fs.Parent(n.tn)
	if err != nil {
		return nil, "", n.m.toErrno("lookup parent", err)
	}
	return n.newChild(ctx, p, out), name, 0
}

var _ = (fs.NodeGetattrer)((*node)(nil))

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.m.fillAttr(n.tn, &out.Attr)
	return 0
}

var _ = (fs.NodeSetattrer)((*node)(nil))

// Setattr changes flags, size and times. TFS stores no owner or mode
// bits, only a regular file's exec and readonly flags: a chmod of a file
// sets exec when it asks for any x bit and readonly when it asks for no w
// bit. Beyond that a request must leave mode and owner as shown (the mode
// the new flags yield); anything else is EPERM, or is ignored with
// Config.IgnoreChmod. All checks come before the first change, so a
// refused request changes nothing.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	m := n.m
	var exec, readonly *bool
	if mode, ok := in.GetMode(); ok {
		var errno syscall.Errno
		if exec, readonly, errno = n.chmodFlags(mode); errno != 0 {
			return errno
		}
	}
	if !m.cfg.IgnoreChmod {
		if uid, ok := in.GetUID(); ok && uid != m.cfg.UID {
			return syscall.EPERM
		}
		if gid, ok := in.GetGID(); ok && gid != m.cfg.GID {
			return syscall.EPERM
		}
	}
	if errno := n.setFlags(exec, readonly); errno != 0 {
		return errno
	}
	if size, ok := in.GetSize(); ok {
		if size > tfs.MaxFileSize {
			return syscall.EFBIG
		}
		if err := m.fs.Truncate(n.tn, int64(size)); err != nil {
			return m.toErrno("truncate", err)
		}
	}
	atime, aok := in.GetATime()
	mtime, mok := in.GetMTime()
	if aok || mok {
		var ap, mp = &atime, &mtime
		if !aok {
			ap = nil
		}
		if !mok {
			mp = nil
		}
		if err := m.fs.SetTimes(n.tn, ap, mp); err != nil {
			return m.toErrno("utimens", err)
		}
	}
	// Every successful setattr changes ctime, even a chmod to the same mode.
	m.touchCtime(n.tn)
	m.fillAttr(n.tn, &out.Attr)
	// go-fuse gives GETATTR replies the attribute timeout but not these:
	// without it, the stat that follows a chmod or utimes (cp -p, tar x)
	// would ask again.
	out.SetTimeout(m.cfg.AttrTimeout)
	return 0
}

// chmodFlags is what a chmod of n to mode asks of TFS: the exec and
// readonly flags to give a regular file (nil for other nodes), or EPERM
// when the mode is one TFS cannot show and chmod is strict.
func (n *node) chmodFlags(mode uint32) (exec, readonly *bool, errno syscall.Errno) {
	m := n.m
	a := m.fs.Getattr(n.tn)
	if a.Kind == tfs.KindFile {
		// A flag whose bits the umask hides entirely keeps its state:
		// the mode cannot say what it should be.
		shown := 0777 &^ m.cfg.Umask
		if shown&0111 != 0 {
			a.Exec = mode&0111 != 0
		}
		if shown&0222 != 0 {
			a.ReadOnly = mode&0222 == 0
		}
		exec, readonly = &a.Exec, &a.ReadOnly
	}
	if !m.cfg.IgnoreChmod && mode&07777 != m.permBits(&a) {
		return nil, nil, syscall.EPERM
	}
	return exec, readonly, 0
}

// setFlags stores the flags chmodFlags chose, if they change anything.
func (n *node) setFlags(exec, readonly *bool) syscall.Errno {
	if exec == nil {
		return 0
	}
	if a := n.m.fs.Getattr(n.tn); a.Exec != *exec || a.ReadOnly != *readonly {
		if err := n.m.fs.SetFlags(n.tn, exec, readonly); err != nil {
			return n.m.toErrno("chmod", err)
		}
	}
	return 0
}

// setModeFlags gives a regular file just made the flags its creation mode
// (already reduced by the caller's umask) asks for: exec for any x bit,
// readonly for no w bit. A plain 0644/0666 file logs nothing more.
func (m *mount) setModeFlags(tn *tfs.Node, mode uint32) syscall.Errno {
	exec, readonly := mode&0111 != 0, mode&0222 == 0
	if !exec && !readonly {
		return 0
	}
	return m.toErrno("set flags of a new file", m.fs.SetFlags(tn, &exec, &readonly))
}

var _ = (fs.NodeStatfser)((*node)(nil))

// Statfs reports space in TFS's 512-byte blocks. TFS has no inode table,
// so the inode counts are zero (df -i shows "-").
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	st := n.m.fs.StatFS()
	bs := st.BlockSize
	if bs == 0 {
		bs = 512
	}
	out.Bsize = bs
	out.Frsize = bs
	out.Blocks = st.Blocks
	out.Bfree = st.Free
	out.Bavail = st.Free
	out.NameLen = st.NameMax
	if out.NameLen == 0 {
		out.NameLen = 255
	}
	return 0
}

// orEpoch maps the zero Time (a node without a timestamp, as mkfs-made
// images have) to 1970, which is what Nanos reads for it.
func orEpoch(t time.Time) time.Time {
	if t.IsZero() {
		return time.Unix(0, 0)
	}
	return t
}
