package tfs

import (
	"errors"
	"syscall"
	"testing"
	"time"
)

// Inode flags persist, and immutable and append-only nodes refuse every
// change the Linux rules forbid while allowing the rest.
func TestInodeFlags(t *testing.T) {
	dev := newVolume(t, 16<<20, "")
	fs := mountMem(t, dev, Options{})
	root := fs.Root()
	imm := mk(t)(fs.Create(root, "imm", true))
	app := mk(t)(fs.Create(root, "app", true))
	dir := mk(t)(fs.Mkdir(root, "sealed"))
	adir := mk(t)(fs.Mkdir(root, "adir"))
	in := mk(t)(fs.Create(dir, "inside", true))
	ain := mk(t)(fs.Create(adir, "inside", true))
	writeAll(t, fs, imm, []byte("fixed"), 0)
	writeAll(t, fs, app, []byte("log:"), 0)
	if in == nil {
		t.Fatal("no file in the directory")
	}
	if err := fs.SetInodeFlags(imm, 0x800); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("an unsupported flag: %v, want EOPNOTSUPP", err)
	}
	must(t, fs.SetInodeFlags(imm, FlagImmutable|FlagNoDump))
	must(t, fs.SetInodeFlags(app, FlagAppend))
	must(t, fs.SetInodeFlags(dir, FlagImmutable))
	must(t, fs.SetInodeFlags(adir, FlagAppend))
	must(t, fs.Close())

	fs = mountMem(t, dev, Options{})
	defer fs.Close()
	root = fs.Root()
	imm, app = mk(t)(fs.Resolve("/imm")), mk(t)(fs.Resolve("/app"))
	dir, adir = mk(t)(fs.Resolve("/sealed")), mk(t)(fs.Resolve("/adir"))
	ain = mk(t)(fs.Resolve("/adir/inside"))
	if f := fs.InodeFlags(imm); f != FlagImmutable|FlagNoDump {
		t.Fatalf("flags after a remount: %#x", f)
	}
	eperm := func(err error, what string) {
		t.Helper()
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s: %v, want EPERM", what, err)
		}
	}
	now, yes := time.Now(), true
	for name, n := range map[string]*Node{"immutable": imm, "append-only": app} {
		_, err := fs.Write(n, []byte("x"), 0)
		eperm(err, name+": overwrite")
		eperm(fs.Truncate(n, 0), name+": truncate")
		eperm(fs.SetTimes(n, &now, &now), name+": set times")
		eperm(fs.SetFlags(n, &yes, nil), name+": chmod")
		eperm(fs.SetXattr(n, "user.x", []byte("1"), 0), name+": setxattr")
		eperm(fs.Unlink(root, name[:3]), name+": unlink")
		eperm(fs.Rename(root, name[:3], root, "moved", 0), name+": rename")
		eperm(fs.Link(n, root, "hard"), name+": link")
		eperm(fs.Fallocate(n, 0, 0, 4096), name+": fallocate growing the file")
	}
	_, err := fs.Write(imm, []byte("x"), 5)
	eperm(err, "immutable: append")
	if _, err := fs.Write(app, []byte("entry\n"), 4); err != nil {
		t.Errorf("append-only: a write at the end: %v", err)
	}
	must(t, fs.Fallocate(app, FallocKeepSize, 0, 8192))
	eperm(fs.Fallocate(imm, FallocKeepSize, 0, 8192), "immutable: fallocate keeping the size")
	// Directories: nothing changes in an immutable one; an append-only one
	// gains entries but loses none.
	_, err = fs.Create(dir, "new", true)
	eperm(err, "create in an immutable directory")
	eperm(fs.Unlink(dir, "inside"), "unlink in an immutable directory")
	_, err = fs.Mkdir(dir, "d")
	eperm(err, "mkdir in an immutable directory")
	mk(t)(fs.Create(adir, "new", true))
	eperm(fs.Unlink(adir, "new"), "unlink in an append-only directory")
	eperm(fs.Rename(adir, "inside", root, "out", 0), "rename out of an append-only directory")
	other := mk(t)(fs.Create(root, "plain", true))
	must(t, fs.Rename(root, "plain", adir, "moved-in", 0)) // gaining an entry is fine
	if got := mk(t)(fs.Resolve("/adir/moved-in")); got != other || ain == nil {
		t.Error("rename into an append-only directory did not land")
	}
	// Clearing the flags gives every right back.
	must(t, fs.SetInodeFlags(imm, 0))
	must(t, fs.Truncate(imm, 0))
	must(t, fs.SetInodeFlags(dir, 0))
	must(t, fs.Unlink(dir, "inside"))
}
