package fusefs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
)

// Opens without requests (Config.NoOpen).
//
// A file handle here carries no state, so an OPEN and its RELEASE are two
// round trips per open that only count opens. When the first OPEN is
// answered ENOSYS, the kernel opens files by itself from then on (keeping
// their page cache, FOPEN_KEEP_CACHE) and sends neither; FLUSH is answered
// ENOSYS always (file.go). Reading a small file then costs one READ instead
// of OPEN, READ, FLUSH and RELEASE. CREATE still returns a handle, but
// takes no open reference either: once the kernel stops sending OPEN, it
// sends no RELEASE for created files (6.18 here) either.
//
// What the open count was for: tfs keeps an unlinked file's blocks while it
// is open. Without OPEN, the kernel's own reference stands in for it. A file
// that loses its last name while the kernel knows its node takes one tfs
// open reference (holdOpen) and gives it back when the kernel forgets the
// node (OnForget), which for an unlinked file happens only after its last
// close and unmap. O_TRUNC arrives as a SETATTR (Mount turns
// CAP_ATOMIC_O_TRUNC off).

// openHold is an open reference taken before a change that may remove a
// node's last name; settle keeps it only if it did.
type openHold struct {
	m *mount
	n *node // nil: nothing held
}

// holdOpen takes an open reference on the kernel's node child (which may
// be nil: the kernel does not know the node, so nothing has it open).
func (n *node) holdOpen(child *fs.Inode) openHold {
	if !n.m.cfg.NoOpen || child == nil {
		return openHold{}
	}
	c, ok := child.Operations().(*node)
	if !ok || child.StableAttr().Mode&syscall.S_IFMT != syscall.S_IFREG {
		return openHold{}
	}
	n.m.fs.Open(c.tn)
	return openHold{m: n.m, n: c}
}

// settle keeps the reference on a node left without links (once per node:
// a second unlinked name of the same node, made before, finds it held),
// and drops it otherwise.
func (h openHold) settle() {
	if h.n == nil {
		return
	}
	if h.m.fs.Getattr(h.n.tn).Nlink == 0 && h.n.heldOpen.CompareAndSwap(false, true) {
		return
	}
	h.m.fs.Release(h.n.tn)
}
