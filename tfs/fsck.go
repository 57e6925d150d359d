package tfs

import (
	"fmt"
	"strings"

	"github.com/tfsmount/tfsmount/blockdev"
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
	loc, err := locateVolume(dev, opts.Partition)
	if err != nil {
		return nil, err
	}
	r := &FsckReport{Volume: loc.what, TotalBlocks: uint64(loc.size / blockSize)}
	opts.ReadOnly = true
	fs, problems, err := load(dev, opts)
	if err != nil {
		r.Problems = append(r.Problems, FsckProblem{Where: loc.what, What: err.Error()})
		return r, nil
	}
	r.Label, r.UUID = fs.log.label, fs.log.uuid
	r.Records = fs.log.records
	for _, p := range problems {
		r.Problems = append(r.Problems, FsckProblem{p.Where, p.What})
	}
	if fs.log.dangling {
		r.Problems = append(r.Problems, FsckProblem{Where: "log", What: "ends inside an incomplete value (a torn write across extensions); a writable mount rebuilds the log"})
	}
	if fs.log.dec.dupNames {
		r.Problems = append(r.Problems, FsckProblem{Where: "log", What: "a name is written immediately more than once; Nanos would append colliding indices; a writable mount rebuilds the log"})
	}
	for _, e := range fs.log.exts {
		r.LogBlocks += e.nblocks
	}
	r.FreeBlocks = fs.free.FreeBlocks()
	if err := fs.free.Check(); err != nil {
		r.Problems = append(r.Problems, FsckProblem{Where: "free space", What: err.Error()})
	}
	// Walk the model: counts, link counts, file sizes.
	seen := map[*Node]bool{}
	var walk func(path string, n *Node)
	walk = func(path string, n *Node) {
		if seen[n] {
			return
		}
		seen[n] = true
		switch n.kind {
		case KindDir:
			r.Dirs++
			c, _ := n.t.attrs["children"].(*tuple)
			for name, v := range c.attrs {
				if ct, ok := v.(*tuple); ok && ct.node != nil {
					walk(strings.TrimSuffix(path, "/")+"/"+name, ct.node)
				}
			}
		case KindFile:
			r.Files++
			for _, e := range n.exts {
				r.DataBlocks += e.allocated
			}
			if v, ok := n.t.attrs["nlink"]; ok {
				if l, ok := numberOf(v); !ok || l != uint64(n.links) {
					r.Problems = append(r.Problems, FsckProblem{Where: path, What: fmt.Sprintf("nlink is %v but %d directory entries refer to it", v, n.links)})
				}
			}
		case KindSymlink:
			r.Symlinks++
		case KindSocket:
			r.Sockets++
		}
	}
	walk("/", fs.root)
	return r, nil
}
