package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pkg/xattr"
	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// memVolume is an empty volume on a memory device.
func memVolume(t *testing.T) (*tfs.FS, func() *tfs.FS) {
	t.Helper()
	q := bh.NewQueue(2)
	t.Cleanup(q.Close)
	dev := blockdev.NewMemory(q, 32<<20)
	if err := format.Mkfs(dev, format.MkfsOptions{}); err != nil {
		t.Fatal(err)
	}
	mount := func() *tfs.FS {
		fsys, err := tfs.Mount(dev, tfs.Options{Queue: q})
		if err != nil {
			t.Fatal(err)
		}
		return fsys
	}
	return mount(), mount
}

// TestCopyInOutRoundTrip copies a host tree into a volume (as mkfs --from
// and put do), remounts, copies it out (as get does) and compares contents,
// symlinks and modification times.
func TestCopyInOutRoundTrip(t *testing.T) {
	src := t.TempDir()
	mtime := time.Date(2022, 5, 6, 7, 8, 9, 0, time.UTC)
	big := bytes.Repeat([]byte("0123456789"), 300000) // 3 MB: several copy chunks
	files := map[string][]byte{"a.txt": []byte("alpha\n"), "dir/b.bin": big, "dir/sub/empty": nil}
	for name, data := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../a.txt", filepath.Join(src, "dir/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(src, "emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(src, "dir"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	// Extended attributes on a file and a directory, trusted.* too (the
	// tests run as root).
	xattrs := map[string]map[string]string{
		"a.txt": {"user.origin": "host", "user.empty": "", "trusted.admin": "x"},
		"dir":   {"user.role": "config dir"},
	}
	for name, attrs := range xattrs {
		for k, v := range attrs {
			if err := xattr.Set(filepath.Join(src, name), k, []byte(v)); err != nil {
				t.Fatalf("set %s on the host: %v", k, err)
			}
		}
	}

	fsys, remount := memVolume(t)
	p := newProgress("test")
	if err := copyTreeIn(fsys, src, p); err != nil {
		t.Fatalf("copy in: %v", err)
	}
	if p.files != 7 || p.bytes != int64(len(big)+6) {
		t.Errorf("progress counted %d files, %d bytes; want 7 and %d", p.files, p.bytes, len(big)+6)
	}
	if err := fsys.Close(); err != nil {
		t.Fatal(err)
	}
	fsys = remount()
	defer fsys.Close()

	out := filepath.Join(t.TempDir(), "out")
	if err := copyOut(fsys, fsys.Root(), out, newProgress("test")); err != nil {
		t.Fatalf("copy out: %v", err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, %v; want %d bytes", name, len(got), err, len(want))
		}
		st, err := os.Stat(filepath.Join(out, name))
		if err == nil && !st.ModTime().Equal(mtime) {
			t.Errorf("%s: mtime %v, want %v", name, st.ModTime(), mtime)
		}
	}
	if st, err := os.Stat(filepath.Join(out, "dir")); err != nil || !st.ModTime().Equal(mtime) {
		t.Errorf("dir mtime: %v, %v; want %v (set after its children were copied)", st.ModTime(), err, mtime)
	}
	if target, err := os.Readlink(filepath.Join(out, "dir/link")); err != nil || target != "../a.txt" {
		t.Errorf("symlink: %q, %v", target, err)
	}
	if st, err := os.Stat(filepath.Join(out, "emptydir")); err != nil || !st.IsDir() {
		t.Errorf("empty directory: %v", err)
	}
	for name, attrs := range xattrs {
		got, err := xattr.List(filepath.Join(out, name))
		if err != nil || len(got) != len(attrs) {
			t.Errorf("%s: xattrs %v, %v; want %d", name, got, err, len(attrs))
		}
		for k, v := range attrs {
			if b, err := xattr.Get(filepath.Join(out, name), k); err != nil || string(b) != v {
				t.Errorf("%s: %s = %q, %v; want %q", name, k, b, err, v)
			}
		}
	}

	// put semantics: into an existing directory under the source's name,
	// or as the named path; overwriting a file replaces its contents.
	dir, name, err := putTarget(fsys, "/dir", "new")
	if err != nil || name != "new" || dir == nil {
		t.Errorf("putTarget into a directory: %v %q", err, name)
	}
	if _, name, err := putTarget(fsys, "/renamed", "src"); err != nil || name != "renamed" {
		t.Errorf("putTarget to a new name: %q, %v", name, err)
	}
	if _, _, err := putTarget(fsys, "/nodir/x", "src"); err == nil {
		t.Error("putTarget under a missing directory succeeded")
	}
}

func TestSizeImage(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "new.img")
	if err := sizeImage(p, 0); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(p); err != nil || st.Size() != defaultImageSize {
		t.Fatalf("new image: %v, %v; want %d bytes", st.Size(), err, defaultImageSize)
	}
	if err := sizeImage(p, 100<<20); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Size() != 100<<20 {
		t.Errorf("grown image has %d bytes, want %d", st.Size(), 100<<20)
	}
	small := filepath.Join(dir, "small.img")
	if err := os.WriteFile(small, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sizeImage(small, 0); err == nil {
		t.Error("a 4 KiB image was accepted")
	}
	if err := sizeImage(dir, 0); err == nil {
		t.Error("a directory was accepted as an image")
	}
}
