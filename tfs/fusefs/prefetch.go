package fusefs

import (
	"slices"
	"strings"
	"sync"

	"github.com/tfsmount/tfsmount/tfs"
)

// Prefetching the next files of a tree walk.
//
// tar, cp -r, rsync and grep -r read a directory's files one after the
// other in the order readdir gave them, and each small file costs one
// device read that nothing overlaps: the image is opened with O_DIRECT, so
// the host's read-ahead across neighbouring files does not happen either.
// So when a file is read from its start and it is the first file of its
// directory's listing, or the one after the file read from its start
// before it, the next files of that listing are read into the cache, in
// one batch the device serves in parallel. A reader of one file, or of
// files in another order, costs nothing extra; ls -l reads no data.

const (
	prefetchFiles = 32        // files ahead of the reader
	prefetchBytes = 256 << 10 // of each file, from its start
)

// dirListing is the regular files of a directory in the order its last
// listing sent them (sorted by name, tfs.FS.ReadDir's order), and how far
// a walk through them has got.
type dirListing struct {
	files []tfs.DirEntry

	mu       sync.Mutex
	lastRead int // index of the file last read from its start; -1: none
	issued   int // files before this index have been prefetched
}

func newDirListing(ents []tfs.DirEntry) *dirListing {
	l := &dirListing{lastRead: -1}
	for _, e := range ents {
		if e.Kind == tfs.KindFile && e.Node != nil {
			l.files = append(l.files, e)
		}
	}
	if len(l.files) < 2 {
		return nil // nothing to prefetch after anything
	}
	return l
}

// readFromStart is called when a reader reads the file named name from
// offset 0. It returns the files to prefetch (none unless the walk is
// sequential), and whether the listing is used up.
func (l *dirListing) readFromStart(name string) (next []tfs.DirEntry, done bool) {
	i, ok := slices.BinarySearchFunc(l.files, name, func(e tfs.DirEntry, name string) int { return strings.Compare(e.Name, name) })
	if !ok {
		return nil, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	sequential := i == 0 || i == l.lastRead+1
	l.lastRead = i
	if !sequential {
		return nil, false
	}
	// A new batch once the reader is within half a batch of the end of
	// what was issued, as read-ahead windows do.
	if l.issued > i+1+prefetchFiles/2 {
		return nil, false
	}
	from := max(l.issued, i+1)
	to := min(i+1+prefetchFiles, len(l.files))
	l.issued = to
	return l.files[from:to], to == len(l.files)
}

// prefetchAfter runs the tree-walk prefetch for a read of n from its start.
func (n *node) prefetchAfter() {
	name, parent := n.Parent()
	if parent == nil {
		return
	}
	d, ok := parent.Operations().(*node)
	if !ok {
		return
	}
	l := d.listing.Load()
	if l == nil {
		return
	}
	next, done := l.readFromStart(name)
	if done {
		// Every file is on its way: the listing has served its purpose.
		d.listing.CompareAndSwap(l, nil)
	}
	for _, f := range next {
		n.m.fs.Prefetch(f.Node, prefetchBytes)
	}
}
