package tfs

import (
	"errors"
	"syscall"
	"testing"
)

type handle struct {
	ino uint64
	gen uint32
}

func handles(t *testing.T, fs *FS) map[string]handle {
	out := map[string]handle{}
	for path, n := range walkTree(t, fs) {
		a := fs.Getattr(n)
		out[path] = handle{a.Ino, a.Gen}
	}
	return out
}

// resolve is what open_by_handle_at does: find the node by number, then
// compare generations.
func resolve(fs *FS, h handle) (*Node, bool) {
	n, err := fs.NodeByIno(h.ino)
	if err != nil || fs.Getattr(n).Gen != h.gen {
		return nil, false
	}
	return n, true
}

// Inode numbers and generations survive a remount, name the same nodes,
// and go stale (never to another node) when a file is removed or the log
// is compacted (ino.go).
func TestInoStableAcrossRemount(t *testing.T) {
	dev := newVolume(t, 16<<20, "")
	fs := mountMem(t, dev, Options{})
	root := fs.Root()
	d := mk(t)(fs.Mkdir(root, "d"))
	e := mk(t)(fs.Mkdir(d, "e"))
	f := mk(t)(fs.Create(e, "f", true))
	writeAll(t, fs, f, []byte("data"), 0)
	must(t, fs.Link(f, root, "f2"))
	mk(t)(fs.Symlink(d, "l", "e/f"))
	mk(t)(fs.Create(root, "gone", true))
	must(t, fs.Unlink(root, "gone"))
	checkInvariants(t, fs)
	before := handles(t, fs)
	if before["/"] != (handle{1, 0}) {
		t.Fatalf("root is %+v, want ino 1 gen 0", before["/"])
	}
	must(t, fs.Close())

	fs = mountMem(t, dev, Options{})
	checkInvariants(t, fs)
	after := handles(t, fs)
	if len(after) != len(before) {
		t.Fatalf("%d paths before the remount, %d after", len(before), len(after))
	}
	for path, h := range before {
		if after[path] != h {
			t.Errorf("%s: %+v before the remount, %+v after", path, h, after[path])
		}
		n, ok := resolve(fs, h)
		if !ok || fs.Getattr(n).Ino != h.ino {
			t.Errorf("%s: handle %+v does not resolve after the remount", path, h)
		}
	}
	// A directory found by handle is reconnected through its parents.
	e, _ = resolve(fs, before["/d/e"])
	p, name, err := fs.Parent(e)
	if err != nil || name != "e" || fs.Getattr(p).Ino != before["/d"].ino {
		t.Fatalf("parent of /d/e: ino %d name %q err %v", fs.Getattr(p).Ino, name, err)
	}
	if _, _, err := fs.Parent(fs.Root()); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("parent of the root: %v, want ENOENT", err)
	}

	// Removed: stale at once, though the file stays open.
	f, _ = resolve(fs, before["/d/e/f"])
	fs.Open(f)
	must(t, fs.Unlink(d0(t, fs, "/d/e"), "f"))
	must(t, fs.Unlink(fs.Root(), "f2"))
	if _, ok := resolve(fs, before["/d/e/f"]); ok {
		t.Fatal("a removed file's handle still resolves")
	}
	fs.Release(f)
	checkInvariants(t, fs)

	// A compaction keeps the numbers of live nodes and numbers new ones
	// past every old number, with a new generation.
	live := handles(t, fs)
	must(t, fs.Compact())
	if got := handles(t, fs); len(got) != len(live) {
		t.Fatalf("compaction changed the tree: %v -> %v", live, got)
	}
	for path, h := range live {
		if n, ok := resolve(fs, h); !ok || fs.Getattr(n).Ino != h.ino {
			t.Errorf("%s: handle %+v stale after a compaction in the same mount", path, h)
		}
	}
	nf := mk(t)(fs.Create(fs.Root(), "new", true))
	na := fs.Getattr(nf)
	for path, h := range before {
		if na.Ino == h.ino {
			t.Fatalf("new file got %s's number %d", path, h.ino)
		}
	}
	checkInvariants(t, fs)
	sum := fs.log.FirstSum
	must(t, fs.Close())

	// After a compaction every old handle is stale, never another file's.
	fs = mountMem(t, dev, Options{})
	defer fs.Close()
	checkInvariants(t, fs)
	if fs.log.FirstSum != sum {
		t.Fatalf("log generation checksum %08x after remount, %08x when compacted", fs.log.FirstSum, sum)
	}
	old := map[handle]string{handle{na.Ino, na.Gen}: "/new"}
	for path, h := range live {
		old[h] = path
	}
	for h, path := range old {
		if path == "/" {
			continue
		}
		if _, ok := resolve(fs, h); ok {
			t.Errorf("%s: handle %+v from before the compaction resolves after the remount", path, h)
		}
	}
	if _, ok := resolve(fs, handles(t, fs)["/new"]); !ok {
		t.Fatal("/new does not resolve by its own handle")
	}
}

func d0(t *testing.T, fs *FS, path string) *Node {
	t.Helper()
	n, ok := walkTree(t, fs)[path]
	if !ok {
		t.Fatalf("%s not found", path)
	}
	return n
}
