package pagecache

import (
	"fmt"
	"testing"
	"time"
)

// The dirty-node list hands out nodes oldest first, keeps a node's place
// when it is written again, drops it when write-back cleans it, and the
// timer's "older than" walk stops at the first young node.
func TestDirtyListOrder(t *testing.T) {
	r := newRig(t, rigOpts{budget: 1 << 20})
	files := make([]*file, 5)
	for i := range files {
		files[i] = r.newFile()
		files[i].write(t, []byte{byte(i)}, 0)
		time.Sleep(time.Millisecond) // distinct dirtySince values
	}
	want := func(what string, got []*Node, idx ...int) {
		t.Helper()
		if len(got) != len(idx) {
			t.Fatalf("%s: %d nodes, want %d", what, len(got), len(idx))
		}
		for i, k := range idx {
			if got[i] != files[k].n {
				t.Fatalf("%s: node %d is not file %d", what, i, k)
			}
		}
	}
	want("oldest 3", r.c.oldestDirty(3), 0, 1, 2)
	// Writing an already dirty file again keeps its age.
	files[0].write(t, []byte{9}, PageSize)
	want("oldest 2 after rewrite", r.c.oldestDirty(2), 0, 1)
	if err := files[1].n.Sync(); err != nil {
		t.Fatal(err)
	}
	want("oldest after sync", r.c.oldestDirty(10), 0, 2, 3, 4)
	r.c.lockVolume()
	cut := files[3].n.dirtySince
	r.c.unlockVolume()
	r.c.writebackOlderThan(cut)
	want("after timer pass", r.c.oldestDirty(10), 4)
	// Dirty again after being clean: the youngest.
	files[0].write(t, []byte{7}, 0)
	want("re-dirtied", r.c.oldestDirty(10), 4, 0)
	files[4].n.Drop()
	want("after drop", r.c.oldestDirty(10), 0)
	r.checkInvariants(t)
}

// BenchmarkManySmallDirtyFiles writes one page to each of 30,000 files
// through a cache too small to hold them, with the timer off: every
// allocation past the budget makes room by writing back the oldest dirty
// file, which must not cost a walk over all dirty files.
func BenchmarkManySmallDirtyFiles(b *testing.B) {
	const files = 30000
	for i := 0; i < b.N; i++ {
		r := newRig(b, rigOpts{budget: 16 << 20, devSize: 256 << 20})
		p := make([]byte, 100)
		for k := 0; k < files; k++ {
			f := r.newFile()
			copy(p, fmt.Sprint(k))
			f.write(b, p, 0)
		}
		if err := r.c.Sync(); err != nil {
			b.Fatal(err)
		}
		r.close()
	}
}
