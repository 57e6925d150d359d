package tfs

import (
	"fmt"
	"testing"

	"github.com/tfsmount/tfsmount/tfs/format"
)

// checkInvariants verifies what the model promises (see the comments on
// Node, extent, blockSet and heap.Ranges): extents sorted, disjoint, with
// 0 < length <= allocated and their blocks in use; the reservation total
// equal to the files' reserved blocks; the allocator consistent.
func checkInvariants(t testing.TB, fs *FS) {
	t.Helper()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.free.Check(); err != nil {
		t.Fatalf("allocator: %v", err)
	}
	var resv uint64
	seen := map[*Node]bool{}
	var walk func(path string, n *Node) error
	walk = func(path string, n *Node) error {
		if seen[n] {
			return nil
		}
		seen[n] = true
		if n.kind == KindDir {
			c := n.t.Attrs["children"].(*format.Tuple)
			subdirs := 0
			for name, v := range c.Attrs {
				ct := v.(*format.Tuple)
				if nodeOf(ct).kind == KindDir {
					subdirs++
					if nodeOf(ct).parent != n {
						return fmt.Errorf("%s%s: parent pointer wrong", path, name)
					}
				}
				if err := walk(path+name+"/", nodeOf(ct)); err != nil {
					return err
				}
			}
			if subdirs != n.subdirs {
				return fmt.Errorf("%s: %d subdirectories counted as %d", path, subdirs, n.subdirs)
			}
			return nil
		}
		for i, e := range n.exts {
			if e.length == 0 || e.length > e.allocated {
				return fmt.Errorf("%s: extent %d length %d allocated %d", path, i, e.length, e.allocated)
			}
			if i > 0 && n.exts[i-1].end() > e.fblock {
				return fmt.Errorf("%s: extents %d and %d overlap or are out of order", path, i-1, i)
			}
			free := false
			fs.free.FreeWithin(e.dblock, e.allocated, func(uint64, uint64) { free = true })
			if free {
				return fmt.Errorf("%s: extent at block %d has free blocks", path, e.dblock)
			}
		}
		for i, r := range n.resv.runs {
			if r[0] >= r[1] || (i > 0 && n.resv.runs[i-1][1] >= r[0]) {
				return fmt.Errorf("%s: reservation runs %v broken", path, n.resv.runs)
			}
		}
		resv += n.resv.total()
		return nil
	}
	if err := walk("/", fs.root); err != nil {
		t.Fatal(err)
	}
	if resv != fs.reserved {
		t.Fatalf("reserved %d blocks, files hold %d", fs.reserved, resv)
	}
	// ino.go: byIno is exactly the linked nodes, by their own numbers.
	for n := range seen {
		if n.ino == 0 || fs.byIno[n.ino] != n {
			t.Fatalf("node %d (%v) is not in byIno", n.ino, n.kind)
		}
	}
	if len(fs.byIno) != len(seen) {
		t.Fatalf("byIno holds %d nodes, the tree %d", len(fs.byIno), len(seen))
	}
}

func TestBlockSet(t *testing.T) {
	var s blockSet
	s.add(10, 20)
	s.add(30, 40)
	s.add(20, 30) // joins both
	if len(s.runs) != 1 || s.total() != 30 {
		t.Fatalf("runs %v", s.runs)
	}
	if u := s.uncovered(0, 50); u != 20 {
		t.Fatalf("uncovered %d", u)
	}
	if n := s.remove(15, 35); n != 20 || len(s.runs) != 2 || s.total() != 10 {
		t.Fatalf("remove gave %d, runs %v", n, s.runs)
	}
}
