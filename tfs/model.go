package tfs

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unicode/utf8"

	"github.com/tfsmount/tfsmount/heap"
	"github.com/tfsmount/tfsmount/pagecache"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// The metadata model (docs/format.md, "Filesystem nodes"): nodes built over
// the decoded tuple graph. The tuples stay the source of truth for what is
// written (unknown attributes, e.g. the root's unikernel configuration, are
// kept as they are); Node caches what the FS API needs.

// Node is one file, directory, symlink or socket. It is stable for the
// mount; hard links share one Node.
type Node struct {
	t      *format.Tuple
	ino    uint64 // how it is chosen: ino.go
	gen    uint32 // the FUSE generation that goes with ino
	kind   Kind
	parent *Node // directories: the directory holding it (root: itself)
	// subdirs counts the directories among a directory's entries, for
	// st_nlink (2 + subdirs) without a scan.
	subdirs int
	links   int // directory entries referencing it, in memory

	// Regular files.
	exts []*extent    // sorted by file block, disjoint in file space
	size atomic.Int64 // current size; written under fs.mu, read anywhere
	// extend is held by whatever may move the end of file: a Write that
	// reaches past it, Truncate, Fallocate without KEEP_SIZE. Taken
	// before fs.mu, never while holding a pagecache lock.
	extend     sync.Mutex
	loggedSize int64 // size as the log (staged or written) has it
	opens      int
	orphan     bool                           // unlinked while open: the last Release frees it (FS.orphans counts these)
	fd         atomic.Pointer[pagecache.Node] // the file's cache handle, made on first use under fs.mu
	resv       blockSet                       // file blocks reserved for delayed allocation
	// timesDirty: mtime/atime changed in memory and not yet logged.
	timesDirty bool
	// iflags: the inode flags (iflags.go), kept in the tuple; loaded here
	// so that every write can check them without fs.mu.
	iflags atomic.Uint32
}

// extent maps file blocks [fblock, fblock+length) to volume blocks
// [dblock, dblock+length); it owns [dblock, dblock+allocated).
//
// Invariant: 0 < length <= allocated; logged extents are in the log under
// key = decimal fblock in the file's extents tuple (t is their tuple).
type extent struct {
	fblock, dblock    uint64
	length, allocated uint64
	uninited          bool
	t                 *format.Tuple // nil until logged
	// pending: allocated at write-back, data not yet written; not logged.
	pending bool
}

func (e *extent) end() uint64 { return e.fblock + e.length }

// problem is one inconsistency found while building the model. fix, if
// set, changes the tuple graph so that a log rebuilt from it no longer has
// the problem (fsck --repair); the model built before is then stale.
type problem struct {
	Where string
	What  string
	fix   func()
}

func (p problem) String() string { return p.Where + ": " + p.What }

const maxNameLen = 255

// checkName validates an entry name the way Nanos path resolution and
// Linux need it. The error wraps the errno to return.
func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return errnoErr(fmt.Sprintf("name %q is reserved", name), syscall.EINVAL)
	case strings.ContainsAny(name, "/\x00"):
		return errnoErr(fmt.Sprintf("name %q contains '/' or NUL", name), syscall.EINVAL)
	case len(name) > maxNameLen:
		return errnoErr(fmt.Sprintf("name of %d bytes is longer than %d", len(name), maxNameLen), syscall.ENAMETOOLONG)
	case !utf8.ValidString(name):
		return errnoErr(fmt.Sprintf("name %q is not valid UTF-8", name), syscall.EINVAL)
	}
	return nil
}

// renameMalformed gives entry name of children tuple c, whose name Linux
// or Nanos cannot use, a name they can, as e2fsck does: '/' and NUL become
// '.', invalid UTF-8 becomes '?', a long name is cut to 255 bytes, a
// reserved one becomes "lost+found", and "~N" is added if the result is
// taken.
func renameMalformed(c *format.Tuple, name string) {
	v := c.Attrs[name]
	delete(c.Attrs, name)
	fixed := strings.ToValidUTF8(strings.NewReplacer("/", ".", "\x00", ".").Replace(name), "?")
	for len(fixed) > maxNameLen || !utf8.ValidString(fixed) {
		fixed = fixed[:len(fixed)-1]
	}
	if fixed == "" || fixed == "." || fixed == ".." {
		fixed = "lost+found"
	}
	try := fixed
	for i := 1; ; i++ {
		if _, taken := c.Attrs[try]; !taken {
			break
		}
		suffix := fmt.Sprintf("~%d", i)
		base := fixed
		for len(base)+len(suffix) > maxNameLen || !utf8.ValidString(base) {
			base = base[:len(base)-1]
		}
		try = base + suffix
	}
	c.Attrs[try] = v
}

// builder walks the tuple graph from the root and creates the nodes.
type builder struct {
	fs       *FS
	used     *heap.Ranges
	problems []problem
	dropped  int // problems beyond maxProblems, counted only
	dirs     map[*format.Tuple]bool
	claims   []claim // extents to reserve once the walk is done
	nodes    int     // nodes made
}

// claim is an extent waiting to be reserved in the allocator. Reserving
// in block order keeps the free-run list short while it is built.
type claim struct {
	e     *extent
	n     *Node
	et    *format.Tuple // the extents tuple, and e's key in it
	key   string
	where string
}

// maxProblems bounds the problems kept with their fixes: a hostile image
// can have millions. fsck --repair runs again until none are left.
const maxProblems = 10000

func (b *builder) add(fix func(), where, format string, args ...any) {
	if len(b.problems) < maxProblems {
		b.problems = append(b.problems, problem{where, fmt.Sprintf(format, args...), fix})
	} else {
		b.dropped++
	}
}

// skip hides entry name of a directory's children tuple c from lookups and
// listings: the model has no node for it, or (a directory met a second
// time) must not show the node twice.
func (b *builder) skip(c *format.Tuple, name string) {
	fs := b.fs
	if fs.skipped == nil {
		fs.skipped = map[*format.Tuple]map[string]bool{}
	}
	if fs.skipped[c] == nil {
		fs.skipped[c] = map[string]bool{}
	}
	fs.skipped[c][name] = true
}

// dropAttr is the fix that removes attribute name from t.
func dropAttr(t *format.Tuple, name string) func() { return func() { delete(t.Attrs, name) } }

func kindOf(t *format.Tuple) Kind {
	if c, ok := t.Attrs["children"]; ok {
		if _, ok := c.(*format.Tuple); ok {
			return KindDir
		}
	}
	if _, ok := t.Attrs["linktarget"]; ok {
		return KindSymlink
	}
	if _, ok := t.Attrs["socket"]; ok {
		return KindSocket
	}
	return KindFile
}

// build creates the node tree under root, reserving file extents in used.
func (b *builder) build(rootT *format.Tuple) *Node {
	root := b.fs.newNode(rootT, KindDir)
	b.nodes++
	root.parent = root
	root.links = 1
	b.dirs = map[*format.Tuple]bool{rootT: true}
	// Iterative depth-first walk: directory depth is bounded only by the log.
	type item struct {
		dir  *Node
		path string
	}
	stack := []item{{root, "/"}}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		children := it.dir.t.Attrs["children"].(*format.Tuple)
		names := make([]string, 0, len(children.Attrs))
		for name := range children.Attrs {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			path := it.path + name
			if err := checkName(name); err != nil {
				c, bad := children, name
				b.skip(c, bad)
				b.add(func() { renameMalformed(c, bad) }, it.path, "entry skipped: %v", err)
				continue
			}
			ct, ok := children.Attrs[name].(*format.Tuple)
			if !ok {
				b.skip(children, name)
				b.add(dropAttr(children, name), path, "entry skipped: it is a %s, not a node", describeValue(children.Attrs[name]))
				continue
			}
			if nodeOf(ct) != nil {
				n := nodeOf(ct)
				if n.kind == KindDir {
					b.skip(children, name)
					b.add(dropAttr(children, name), path, "entry skipped: the directory already appears at another place (a cycle, or two parents)")
					continue
				}
				n.links++
				continue
			}
			k := kindOf(ct)
			if k == KindSymlink {
				if _, ok := format.TextOf(ct.Attrs["linktarget"]); !ok {
					b.skip(children, name)
					b.add(dropAttr(children, name), path, "entry skipped: linktarget is a %s, not a string", describeValue(ct.Attrs["linktarget"]))
					continue
				}
			}
			if _, bad := ct.Attrs["children"]; bad && k != KindDir {
				b.add(dropAttr(ct, "children"), path, "children is not a tuple")
			}
			n := b.fs.newNode(ct, k)
			b.nodes++
			n.links = 1
			switch k {
			case KindDir:
				if _, both := ct.Attrs["extents"]; both {
					b.add(dropAttr(ct, "extents"), path, "has both children and extents; treated as a directory")
				}
				n.parent = it.dir
				it.dir.subdirs++
				stack = append(stack, item{n, path + "/"})
			case KindFile:
				b.file(n, path)
			}
		}
	}
	b.reserve()
	return root
}

// reserve claims every extent's blocks; an extent overlapping the log or
// an extent claimed before it is reported and dropped from its file.
func (b *builder) reserve() {
	sort.Slice(b.claims, func(i, j int) bool { return b.claims[i].e.dblock < b.claims[j].e.dblock })
	for _, c := range b.claims {
		if err := b.used.Reserve(c.e.dblock, c.e.allocated); err != nil {
			b.add(dropAttr(c.et, c.key), c.where, "extent dropped: blocks [%d,+%d) overlap the log or another extent", c.e.dblock, c.e.allocated)
			c.n.removeExtent(c.e)
		}
	}
	b.claims = nil
}

// file loads a regular file's length and extents.
func (b *builder) file(n *Node, path string) {
	t := n.t
	badLength := false
	if v, ok := t.Attrs["filelength"]; ok {
		l, ok := format.NumberOf(v)
		if !ok || l > MaxFileSize {
			badLength = true
		} else {
			n.size.Store(int64(l))
		}
	}
	defer func() {
		if !badLength {
			return
		}
		// Keep what the extents hold.
		var end uint64
		if k := len(n.exts); k > 0 {
			end = n.exts[k-1].end() * format.BlockSize
		}
		n.size.Store(int64(end))
		n.loggedSize = int64(end)
		b.add(func() { t.Attrs["filelength"] = format.IntOf(end) }, path, "filelength %s is not a usable number; the file ends with its last extent", describeValue(t.Attrs["filelength"]))
	}()
	n.loggedSize = n.size.Load()
	ev, ok := t.Attrs["extents"]
	if !ok {
		return
	}
	et, ok := ev.(*format.Tuple)
	if !ok {
		b.add(dropAttr(t, "extents"), path, "extents is a %s, not a tuple; the file has no data", describeValue(ev))
		return
	}
	vol := b.fs.blocks
	keys := map[*extent]string{}
	for key, v := range et.Attrs {
		where := fmt.Sprintf("%s extent %q", path, key)
		drop := dropAttr(et, key)
		xt, ok := v.(*format.Tuple)
		if !ok {
			b.add(drop, where, "extent dropped: it is a %s, not a tuple", describeValue(v))
			continue
		}
		fb, err := strconv.ParseUint(key, 10, 64)
		if err != nil {
			b.add(drop, where, "extent dropped: its key is not a decimal block number")
			continue
		}
		var f [3]uint64
		bad := false
		for i, name := range []string{"offset", "length", "allocated"} {
			x, ok := format.NumberOf(xt.Attrs[name])
			if !ok {
				b.add(drop, where, "extent dropped: %s is missing or not a number", name)
				bad = true
				break
			}
			f[i] = x
		}
		if bad {
			continue
		}
		e := &extent{fblock: fb, dblock: f[0], length: f[1], allocated: f[2], t: xt}
		_, e.uninited = xt.Attrs["uninited"]
		switch {
		case e.length == 0 || e.allocated == 0:
			b.add(drop, where, "extent dropped: length %d or allocated %d is zero", e.length, e.allocated)
			continue
		case e.length > e.allocated:
			b.add(drop, where, "extent dropped: length %d exceeds allocated %d", e.length, e.allocated)
			continue
		case e.allocated > vol || e.dblock > vol-e.allocated:
			b.add(drop, where, "extent dropped: blocks [%d,+%d) lie outside the volume of %d blocks", e.dblock, e.allocated, vol)
			continue
		case e.fblock > MaxFileSize/format.BlockSize-e.length:
			b.add(drop, where, "extent dropped: file blocks [%d,+%d) overflow", e.fblock, e.length)
			continue
		}
		keys[e] = key
		n.exts = append(n.exts, e)
	}
	sort.Slice(n.exts, func(i, j int) bool { return n.exts[i].fblock < n.exts[j].fblock })
	// Extents overlapping in the file: the later one goes.
	kept := n.exts[:0]
	for _, e := range n.exts {
		if k := len(kept); k > 0 && kept[k-1].end() > e.fblock {
			key := keys[e]
			b.add(dropAttr(et, key), path, "extent dropped: file blocks %d and %d overlap", kept[k-1].fblock, e.fblock)
			continue
		}
		kept = append(kept, e)
		b.claims = append(b.claims, claim{e: e, n: n, et: et, key: keys[e], where: fmt.Sprintf("%s extent %q", path, keys[e])})
	}
	n.exts = kept
}

// describeValue names what a value is, for problem reports: its type, and
// a short rendering of a number or string.
func describeValue(v format.Value) string {
	switch x := v.(type) {
	case format.MissingRef:
		return fmt.Sprintf("reference to index %d, which the log never defined", x.Idx)
	case nil:
		return "nothing"
	case *format.Tuple:
		return "tuple"
	case *format.Vector:
		return "vector"
	}
	if n, ok := format.NumberOf(v); ok {
		return fmt.Sprintf("number %d", n)
	}
	if s, ok := format.TextOf(v); ok {
		if len(s) > 40 {
			s = s[:40] + "..."
		}
		return fmt.Sprintf("string %q", s)
	}
	return fmt.Sprintf("%T", v)
}

// nodeOf is the node a value is, if it is a tuple the model has seen
// (format.Tuple.Owner holds it), else nil.
func nodeOf(v any) *Node {
	t, ok := v.(*format.Tuple)
	if !ok {
		return nil
	}
	n, _ := t.Owner.(*Node)
	return n
}

// newNode makes the node of t; numberTree (mount) or setIno (a new node)
// gives it its inode number once the log has given t an index.
func (fs *FS) newNode(t *format.Tuple, k Kind) *Node {
	n := &Node{t: t, kind: k}
	t.Owner = n
	n.loadInodeFlags()
	return n
}

func (n *Node) timeAttr(name string) uint64 {
	v, _ := format.NumberOf(n.t.Attrs[name])
	return v
}

// Getattr returns what stat shows of n.
func (fs *FS) Getattr(n *Node) Attr {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.attrLocked(n)
}

func (fs *FS) attrLocked(n *Node) Attr {
	a := Attr{Ino: n.ino, Gen: n.gen, Kind: n.kind, Atime: format.Time(n.timeAttr("atime")), Mtime: format.Time(n.timeAttr("mtime"))}
	_, a.Exec = n.t.Attrs["exec"]
	_, a.ReadOnly = n.t.Attrs["readonly"]
	// A removed node (rmdir, or a rename over it, or the last unlink of an
	// open file) shows no links, as fstat on a descriptor still open to it
	// must; the root is never removed.
	switch n.kind {
	case KindDir:
		a.Nlink = uint32(2 + n.subdirs)
		if n.links <= 0 && n != fs.root {
			a.Nlink = 0
		}
	case KindSymlink:
		s, _ := format.TextOf(n.t.Attrs["linktarget"])
		a.Size = int64(len(s))
		a.Nlink = uint32(max(n.links, 0))
	default:
		a.Size = n.size.Load()
		a.Nlink = uint32(max(n.links, 0))
		for _, e := range n.exts {
			a.Blocks += int64(e.length)
		}
	}
	return a
}
