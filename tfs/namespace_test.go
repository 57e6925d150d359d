package tfs

import "testing"

// Nodes removed by rmdir, by a rename over them or by their last unlink
// show nlink 0 (what fstat on a descriptor still open to them reports);
// live nodes keep their counts.
func TestRemovedNodesShowNoLinks(t *testing.T) {
	dev := newVolume(t, 8<<20, "")
	fs := mountMem(t, dev, Options{})
	defer fs.Close()
	root := fs.Root()
	a := mk(t)(fs.Mkdir(root, "a"))
	b := mk(t)(fs.Mkdir(root, "b"))
	c := mk(t)(fs.Mkdir(root, "c"))
	f := mk(t)(fs.Create(root, "f", true))
	g := mk(t)(fs.Create(root, "g", true))
	l := mk(t)(fs.Symlink(root, "l", "f"))
	fs.Open(f)
	defer fs.Release(f)
	if n := fs.Getattr(b).Nlink; n != 2 {
		t.Fatalf("live directory: nlink %d, want 2", n)
	}
	must(t, fs.Rename(root, "a", root, "b", 0)) // b is replaced
	must(t, fs.Rmdir(root, "c"))
	must(t, fs.Link(g, root, "g2"))
	must(t, fs.Unlink(root, "g"))
	must(t, fs.Unlink(root, "f"))
	must(t, fs.Unlink(root, "l"))
	for _, c := range []struct {
		name string
		n    *Node
		want uint32
	}{
		{"renamed directory", a, 2},
		{"directory replaced by rename", b, 0},
		{"removed directory", c, 0},
		{"open file without links", f, 0},
		{"file with one link left", g, 1},
		{"removed symlink", l, 0},
		{"root", root, 3},
	} {
		if got := fs.Getattr(c.n).Nlink; got != c.want {
			t.Errorf("%s: nlink %d, want %d", c.name, got, c.want)
		}
	}
}
