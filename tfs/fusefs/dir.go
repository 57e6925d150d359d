package fusefs

import (
	"context"
	"syscall"
	"unicode/utf8"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tfsmount/tfsmount/tfs"
)

// checkName refuses names Nanos could not resolve: longer than 255 bytes
// or not UTF-8. (The kernel never sends "", "." or "..".)
func checkName(name string) syscall.Errno {
	if len(name) > 255 {
		return syscall.ENAMETOOLONG
	}
	if !utf8.ValidString(name) {
		return syscall.EINVAL
	}
	return 0
}

var _ = (fs.NodeLookuper)((*node)(nil))

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	tn, err := n.m.fs.Lookup(n.tn, name)
	if err != nil {
		return nil, n.m.toErrno("lookup", err)
	}
	return n.newChild(ctx, tn, out), 0
}

var _ = (fs.NodeReaddirer)((*node)(nil))

// Readdir lists the directory as it is when the listing starts, with "."
// and ".." first. With readdirplus the kernel also gets every entry's
// attributes (go-fuse calls Lookup for each).
func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ents, err := n.m.fs.ReadDir(n.tn)
	if err != nil {
		return nil, n.m.toErrno("readdir", err)
	}
	parentIno := n.StableAttr().Ino
	if _, p := n.Parent(); p != nil {
		parentIno = p.StableAttr().Ino
	}
	list := make([]fuse.DirEntry, 0, len(ents)+2)
	list = append(list,
		fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: n.StableAttr().Ino},
		fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: parentIno})
	for _, e := range ents {
		list = append(list, fuse.DirEntry{Name: e.Name, Mode: kindMode(e.Kind), Ino: e.Ino})
	}
	n.listing.Store(newDirListing(ents))
	return fs.NewListDirStream(list), 0
}

var _ = (fs.NodeMkdirer)((*node)(nil))

// Mkdir ignores mode: TFS stores none; the directory shows 0777&^umask.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := checkName(name); errno != 0 {
		return nil, errno
	}
	tn, err := n.m.fs.Mkdir(n.tn, name)
	if err != nil {
		return nil, n.m.toErrno("mkdir", err)
	}
	return n.newChild(ctx, tn, out), 0
}

var _ = (fs.NodeSymlinker)((*node)(nil))

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := checkName(name); errno != 0 {
		return nil, errno
	}
	tn, err := n.m.fs.Symlink(n.tn, name, target)
	if err != nil {
		return nil, n.m.toErrno("symlink", err)
	}
	return n.newChild(ctx, tn, out), 0
}

var _ = (fs.NodeReadlinker)((*node)(nil))

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	target, err := n.m.fs.Readlink(n.tn)
	if err != nil {
		return nil, n.m.toErrno("readlink", err)
	}
	return []byte(target), 0
}

var _ = (fs.NodeMknoder)((*node)(nil))

// Mknod makes sockets (TFS has a socket entry type) and regular files
// (mknod(2) with S_IFREG). TFS cannot hold FIFOs or device nodes: EPERM.
func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := checkName(name); errno != 0 {
		return nil, errno
	}
	var tn *tfs.Node
	var err error
	switch mode & syscall.S_IFMT {
	case syscall.S_IFSOCK:
		tn, err = n.m.fs.Mksock(n.tn, name)
	case syscall.S_IFREG, 0:
		tn, err = n.m.fs.Create(n.tn, name, true)
	default:
		return nil, syscall.EPERM
	}
	if err != nil {
		return nil, n.m.toErrno("mknod", err)
	}
	if tn != nil && mode&syscall.S_IFMT != syscall.S_IFSOCK {
		if errno := n.m.setModeFlags(tn, mode); errno != 0 {
			return nil, errno
		}
	}
	return n.newChild(ctx, tn, out), 0
}

var _ = (fs.NodeLinker)((*node)(nil))

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := checkName(name); errno != 0 {
		return nil, errno
	}
	t, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	if err := n.m.fs.Link(t.tn, n.tn, name); err != nil {
		return nil, n.m.toErrno("link", err)
	}
	n.m.touchCtime(t.tn)
	return n.newChild(ctx, t.tn, out), 0
}

var _ = (fs.NodeUnlinker)((*node)(nil))

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	victim, _ := n.m.fs.Lookup(n.tn, name)
	hold := n.holdOpen(n.GetChild(name))
	err := n.m.fs.Unlink(n.tn, name)
	hold.settle()
	if err != nil {
		return n.m.toErrno("unlink", err)
	}
	n.m.touchCtimeIfLinked(victim) // its link count changed
	return 0
}

var _ = (fs.NodeRmdirer)((*node)(nil))

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.m.toErrno("rmdir", n.m.fs.Rmdir(n.tn, name))
}

var _ = (fs.NodeRenamer)((*node)(nil))

// Rename passes renameat2 flags through: the FUSE values of
// RENAME_NOREPLACE, RENAME_EXCHANGE and RENAME_WHITEOUT are the Linux ones,
// which tfs.RenameFlags uses too.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if errno := checkName(newName); errno != 0 {
		return errno
	}
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	moved, _ := n.m.fs.Lookup(n.tn, name)
	replaced, _ := n.m.fs.Lookup(np.tn, newName)
	hold := n.holdOpen(np.GetChild(newName))
	err := n.m.fs.Rename(n.tn, name, np.tn, newName, tfs.RenameFlags(flags))
	hold.settle()
	if err != nil {
		return n.m.toErrno("rename", err)
	}
	n.m.touchCtime(moved)
	n.m.touchCtimeIfLinked(replaced)
	return 0
}

var _ = (fs.NodeFsyncer)((*node)(nil))

// Fsync serves fsync/fdatasync on files and fsync on directories (go-fuse
// routes FSYNCDIR here). Bit 0 of flags is FUSE_FSYNC_FDATASYNC.
func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	return n.m.toErrno("fsync", n.m.fs.Fsync(n.tn, flags&1 != 0))
}
