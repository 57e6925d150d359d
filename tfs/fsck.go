package tfs

import (
	"fmt"
	"strings"
	"syscall"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// FsckProblem is one inconsistency: where it is and what is wrong.
type FsckProblem struct {
	Where string
	What  string
}

func (p FsckProblem) String() string { return p.Where + ": " + p.What }

// FsckReport is what Fsck found.
type FsckReport struct {
	Volume   string // where the volume was found
	Label    string
	UUID     [16]byte
	Problems []FsckProblem
	// Counts over the tree reachable from the root.
	Dirs, Files, Symlinks, Sockets int
	Records                        uint64 // log records replayed
	LogBlocks                      uint64 // blocks held by the log chain
	DataBlocks                     uint64 // blocks held by file extents
	FreeBlocks                     uint64
	TotalBlocks                    uint64
}

// Clean reports whether no problem was found.
func (r *FsckReport) Clean() bool { return len(r.Problems) == 0 }

func (r *FsckReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: label %q, %d dirs, %d files, %d symlinks, %d sockets; %d log records in %d blocks; %d data blocks, %d of %d blocks free\n",
		r.Volume, r.Label, r.Dirs, r.Files, r.Symlinks, r.Sockets, r.Records, r.LogBlocks, r.DataBlocks, r.FreeBlocks, r.TotalBlocks)
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "problem: %s\n", p)
	}
	if r.Clean() {
		b.WriteString("clean\n")
	}
	return b.String()
}

// Fsck checks a volume without changing it. A volume that cannot be found
// or read at all is an error; everything wrong inside it is a problem in
// the report.
func Fsck(dev blockdev.Device, opts Options) (*FsckReport, error) {
	loc, err := format.LocateVolume(dev, opts.Partition)
	if err != nil {
		return nil, err
	}
	r := &FsckReport{Volume: loc.What, TotalBlocks: uint64(loc.Size / format.BlockSize)}
	opts.ReadOnly = true
	fs, problems, err := load(dev, opts, false)
	if err != nil {
		r.Problems = append(r.Problems, FsckProblem{Where: loc.What, What: err.Error()})
		return r, nil
	}
	for _, p := range fs.check(problems) {
		r.Problems = append(r.Problems, FsckProblem{p.Where, p.What})
	}
	fs.count(r)
	return r, nil
}

// check lists every problem of a loaded volume: the model's, the log's
// state, the allocator's and the link counts.
func (fs *FS) check(problems []problem) []problem {
	if t := fs.log.Torn; t != nil {
		problems = append(problems, problem{Where: "log", What: fmt.Sprintf("a crash left a torn tail at block %d byte %d (%s); the log ends there (a writable mount or fsck --repair writes the end)", t.At.Ext, t.At.Pos, t.Why)})
	}
	if fs.log.Dangling {
		problems = append(problems, problem{Where: "log", What: "ends inside an incomplete value (a torn write across extensions); a writable mount rebuilds the log"})
	}
	if fs.log.Dec.DupNames {
		problems = append(problems, problem{Where: "log", What: "a name is written immediately more than once; Nanos would append colliding indices; a writable mount rebuilds the log"})
	}
	if err := fs.free.Check(); err != nil {
		problems = append(problems, problem{Where: "free space", What: err.Error()})
	}
	// Link counts: every file's nlink, where stored, is its number of
	// directory entries.
	fs.walk(func(path string, n *Node) {
		if n.kind != KindFile {
			return
		}
		if v, ok := n.t.Attrs["nlink"]; ok {
			if l, ok := format.NumberOf(v); !ok || l != uint64(n.links) {
				t, links := n.t, n.links
				problems = append(problems, problem{Where: path, What: fmt.Sprintf("nlink is %s but %d directory entries refer to it", describeValue(v), n.links),
					fix: func() { t.Attrs["nlink"] = format.IntOf(uint64(links)) }})
			}
		}
	})
	return problems
}

// count fills the report's counts over the tree reachable from the root.
func (fs *FS) count(r *FsckReport) {
	r.Label, r.UUID = fs.log.Label, fs.log.UUID
	r.Records = fs.log.Records
	for _, e := range fs.log.Exts {
		r.LogBlocks += e.NBlocks
	}
	r.FreeBlocks = fs.free.FreeBlocks()
	fs.walk(func(path string, n *Node) {
		switch n.kind {
		case KindDir:
			r.Dirs++
		case KindFile:
			r.Files++
			for _, e := range n.exts {
				r.DataBlocks += e.allocated
			}
		case KindSymlink:
			r.Symlinks++
		case KindSocket:
			r.Sockets++
		}
	})
}

// walk calls f once for every node reachable from the root (a node with
// several links once, at the first path found), skipping malformed
// entries. For loaded volumes, before they are shared.
func (fs *FS) walk(f func(path string, n *Node)) {
	seen := map[*Node]bool{}
	type item struct {
		path string
		n    *Node
	}
	stack := []item{{"/", fs.root}}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[it.n] {
			continue
		}
		seen[it.n] = true
		f(it.path, it.n)
		if it.n.kind != KindDir {
			continue
		}
		c, _ := it.n.t.Attrs["children"].(*format.Tuple)
		for name, v := range c.Attrs {
			if ct, ok := v.(*format.Tuple); ok && nodeOf(ct) != nil && !fs.skipped[c][name] {
				stack = append(stack, item{strings.TrimSuffix(it.path, "/") + "/" + name, nodeOf(ct)})
			}
		}
	}
}

// Repair fixes what a crash or a damaged image can leave, and returns the
// changes it made, one line each, with the report of a check run after
// them (nil changes: nothing needed fixing):
//   - a log that cannot be read to its end ends before the first record
//     that cannot be read (a torn tail, or damage: what follows is lost);
//   - malformed entries (bad names, values that are not nodes, a directory
//     in two places, symlinks without a target) are removed;
//   - extents that are malformed, lie outside the volume, or overlap the
//     log or another extent are dropped (their blocks become free, since
//     free space is whatever nothing references);
//   - wrong link counts are set to the number of entries.
//
// Everything that is kept is then written as a new log (a compaction), so
// the old, damaged records are gone. Inode numbers change, as with any
// compaction.
func Repair(dev blockdev.Device, opts Options) ([]string, *FsckReport, error) {
	if dev.ReadOnly() {
		return nil, nil, errnoErr("repair needs a writable device", syscall.EROFS)
	}
	opts.ReadOnly = false
	fs, problems, err := load(dev, opts, true)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot repair: %w", err)
	}
	var changes []string
	if t := fs.log.Torn; t != nil {
		changes = append(changes, fmt.Sprintf("log: ended at block %d byte %d: %s", t.At.Ext, t.At.Pos, t.Why))
	}
	fixed := 0
	for _, p := range fs.check(problems) {
		if p.fix != nil {
			p.fix()
			fixed++
			changes = append(changes, fmt.Sprintf("%s: %s: fixed", p.Where, p.What))
		}
	}
	if fixed > 0 {
		// Build the model again from the fixed graph, so that every block
		// the kept entries reference is reserved before the new log is
		// placed.
		for _, n := range fs.byIno {
			n.t.Owner = nil
		}
		fs.free = fs.logUsed.Clone()
		for _, p := range fs.buildModel(fs.root.t) {
			changes = append(changes, fmt.Sprintf("%s: %s: left (run fsck --repair again)", p.Where, p.What))
		}
	}
	if len(changes) > 0 || fs.log.Dangling || fs.log.Dec.DupNames {
		if len(changes) == 0 {
			changes = append(changes, "log: rewritten (it ended inside a value, or repeated a name)")
		}
		if fs.q == nil {
			fs.q = bh.NewQueue(1)
			fs.ownQueue = true
		}
		fs.w = newLogWriter(fs)
		err = fs.compactLocked()
		fs.closeQueue()
		if err != nil {
			return changes, nil, fmt.Errorf("rewrite the log: %w", err)
		}
		changes = append(changes, "log: rewritten from what was kept")
	}
	opts.ReadOnly = true
	r, err := Fsck(dev, opts)
	return changes, r, err
}
