package tfs

import (
	"errors"
	"syscall"
	"testing"

	"github.com/tfsmount/tfsmount/tfs/format"
)

// SetFlags stores exec and readonly as null-marker attributes, clears
// them with removal records, and both survive a remount and a compaction.
func TestSetFlagsPersist(t *testing.T) {
	dev := newVolume(t, 8<<20, "")
	fs := mountMem(t, dev, Options{})
	f := mk(t)(fs.Create(fs.Root(), "tool", true))
	g := mk(t)(fs.Create(fs.Root(), "other", true))
	yes, no := true, false
	must(t, fs.SetFlags(f, &yes, &yes))
	must(t, fs.SetFlags(g, &yes, nil))
	if a := fs.Getattr(f); !a.Exec || !a.ReadOnly {
		t.Fatalf("after set: exec %v readonly %v", a.Exec, a.ReadOnly)
	}
	must(t, fs.Close())

	fs = mountMem(t, dev, Options{})
	f = mk(t)(fs.Resolve("/tool"))
	g = mk(t)(fs.Resolve("/other"))
	if a := fs.Getattr(f); !a.Exec || !a.ReadOnly {
		t.Fatalf("after remount: exec %v readonly %v", a.Exec, a.ReadOnly)
	}
	if v := f.t.Attrs["exec"]; v != format.NullMarker {
		t.Errorf("exec stored as %#v, want the null marker", v)
	}
	if a := fs.Getattr(g); !a.Exec || a.ReadOnly {
		t.Fatalf("other: exec %v readonly %v, want exec only", a.Exec, a.ReadOnly)
	}
	must(t, fs.SetFlags(f, &no, nil)) // clear exec, keep readonly
	must(t, fs.SetFlags(g, nil, &no)) // already clear: no record
	must(t, fs.Compact())
	must(t, fs.SetFlags(f, nil, &no))
	must(t, fs.Close())

	fs = mountMem(t, dev, Options{ReadOnly: true})
	defer fs.Close()
	f = mk(t)(fs.Resolve("/tool"))
	g = mk(t)(fs.Resolve("/other"))
	if a := fs.Getattr(f); a.Exec || a.ReadOnly {
		t.Errorf("after clearing: exec %v readonly %v", a.Exec, a.ReadOnly)
	}
	if a := fs.Getattr(g); !a.Exec {
		t.Error("other lost exec")
	}
	if err := fs.SetFlags(g, &no, nil); !errors.Is(err, syscall.EROFS) {
		t.Errorf("SetFlags on a read-only mount: %v, want EROFS", err)
	}
	if err := fs.SetFlags(fs.Root(), &yes, nil); !errors.Is(err, syscall.EPERM) {
		t.Errorf("SetFlags on a directory: %v, want EPERM", err)
	}
	rep, err := Fsck(dev, Options{Queue: testQueue(t)})
	must(t, err)
	if !rep.Clean() {
		t.Errorf("fsck: %v", rep)
	}
}
