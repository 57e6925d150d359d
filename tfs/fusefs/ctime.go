package fusefs

import (
	"time"

	"github.com/hanwen/go-fuse/v2/fs"

	"github.com/tfsmount/tfsmount/tfs"
)

// TFS stores no ctime. stat shows mtime as ctime, except after a change
// that POSIX says updates ctime but leaves mtime alone (link, unlink,
// rename, chmod/chown, utimes, xattrs, fallocate): then this mount shows
// the time of that change, until mtime passes it. These times live in
// memory only; after a remount ctime is mtime again.
//
// m.ctimes maps *tfs.Node to the time.Time of its last such change. An
// entry is dropped once the node's mtime is not older, when the node loses
// its last link, and when the kernel forgets the node, so the map holds
// only live nodes changed that way and not written since.

// touchCtime records a ctime-only change of tn now.
func (m *mount) touchCtime(tn *tfs.Node) {
	if tn != nil {
		m.ctimes.Store(tn, time.Now())
	}
}

// touchCtimeIfLinked is touchCtime for a node that may just have lost its
// last name: a node without links is dropped instead.
func (m *mount) touchCtimeIfLinked(tn *tfs.Node) {
	if tn == nil {
		return
	}
	if m.fs.Getattr(tn).Nlink == 0 {
		m.ctimes.Delete(tn)
		return
	}
	m.touchCtime(tn)
}

// ctime is the ctime to show for tn, whose mtime is mtime.
func (m *mount) ctime(tn *tfs.Node, mtime time.Time) time.Time {
	v, ok := m.ctimes.Load(tn)
	if !ok {
		return mtime
	}
	if t := v.(time.Time); t.After(mtime) {
		return t
	}
	m.ctimes.CompareAndDelete(tn, v)
	return mtime
}

var _ = (fs.NodeOnForgetter)((*node)(nil))

// OnForget runs when the kernel drops the node: its in-memory ctime goes,
// and so does the open reference an unlinked file held (noopen.go).
func (n *node) OnForget() {
	n.m.ctimes.Delete(n.tn)
	if n.heldOpen.CompareAndSwap(true, false) {
		n.m.fs.Release(n.tn)
	}
}
