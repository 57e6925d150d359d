package fusefs

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestReaddirListsEntriesWithTypes(t *testing.T) {
	v := newTestVolume(t, Config{})
	want := map[string]os.FileMode{"dir": os.ModeDir, "file": 0, "link": os.ModeSymlink}
	if err := os.Mkdir(v.path("dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(v.path("file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("file", v.path("link")); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(v.dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]os.FileMode{}
	for _, e := range ents {
		got[e.Name()] = e.Type()
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("readdir: %v, want %v", got, want)
	}
}

func TestRenameFlags(t *testing.T) {
	v := newTestVolume(t, Config{})
	a, b := v.path("a"), v.path("b")
	if err := os.WriteFile(a, []byte("A"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte("B"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_NOREPLACE); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("RENAME_NOREPLACE onto a file: %v, want EEXIST", err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("RENAME_EXCHANGE: %v", err)
	}
	for p, want := range map[string]string{a: "B", b: "A"} {
		if got, err := os.ReadFile(p); err != nil || string(got) != want {
			t.Errorf("after exchange %s = %q, %v; want %q", p, got, err, want)
		}
	}
	if err := os.Mkdir(v.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(v.path("d"), v.path("d/sub")); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("moving a directory into itself: %v, want EINVAL", err)
	}
	if err := os.Rename(a, v.path("d/a2")); err != nil {
		t.Fatal(err)
	}
	v.remount(Config{})
	if got, err := os.ReadFile(v.path("d/a2")); err != nil || string(got) != "B" {
		t.Errorf("after rename and remount: %q, %v", got, err)
	}
	if _, err := os.Lstat(v.path("a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old name still there: %v", err)
	}
}

func TestRmdirAndUnlinkErrors(t *testing.T) {
	v := newTestVolume(t, Config{})
	if err := os.MkdirAll(v.path("d/e"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Rmdir(v.path("d")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("rmdir non-empty: %v, want ENOTEMPTY", err)
	}
	if err := syscall.Unlink(v.path("d")); !errors.Is(err, syscall.EISDIR) && !errors.Is(err, syscall.EPERM) {
		t.Errorf("unlink a directory: %v, want EISDIR or EPERM", err)
	}
	if err := os.Mkdir(v.path(strings.Repeat("n", 256)), 0o755); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Errorf("256-byte name: %v, want ENAMETOOLONG", err)
	}
	if err := os.Mkdir(v.path("bad\xff"), 0o755); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("non-UTF-8 name: %v, want EINVAL", err)
	}
	if err := os.Link(v.path("d"), v.path("d2")); !errors.Is(err, syscall.EPERM) {
		t.Errorf("hard link to a directory: %v, want EPERM", err)
	}
}

func TestMknodSocketOnly(t *testing.T) {
	v := newTestVolume(t, Config{})
	if err := unix.Mknod(v.path("sock"), unix.S_IFSOCK|0o644, 0); err != nil {
		t.Fatalf("mknod socket: %v", err)
	}
	if st := stat(t, v.path("sock")); st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
		t.Errorf("socket shows mode %o", st.Mode)
	}
	if err := unix.Mkfifo(v.path("fifo"), 0o644); !errors.Is(err, syscall.EPERM) {
		t.Errorf("mkfifo: %v, want EPERM", err)
	}
	if err := unix.Mknod(v.path("chr"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))); !errors.Is(err, syscall.EPERM) {
		t.Errorf("mknod char device: %v, want EPERM", err)
	}
	if err := unix.Mknod(v.path("reg"), unix.S_IFREG|0o644, 0); err != nil {
		t.Errorf("mknod regular file: %v", err)
	}
	v.remount(Config{})
	if st := stat(t, v.path("sock")); st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
		t.Errorf("after remount socket shows mode %o", st.Mode)
	}
	if err := os.Remove(v.path("sock")); err != nil {
		t.Errorf("unlink socket: %v", err)
	}
}

func TestUnlinkedOpenFileKeepsData(t *testing.T) {
	v := newTestVolume(t, Config{})
	p := v.path("f")
	if err := os.WriteFile(p, []byte("still here"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("!"), 10); err != nil {
		t.Fatalf("write after unlink: %v", err)
	}
	buf := make([]byte, 11)
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "still here!" {
		t.Errorf("read after unlink: %q, %v", buf, err)
	}
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unlinked name still visible: %v", err)
	}
}

func TestSymlinkTarget(t *testing.T) {
	v := newTestVolume(t, Config{})
	target := "../some/where/" + strings.Repeat("x", 200)
	if err := os.Symlink(target, v.path("l")); err != nil {
		t.Fatal(err)
	}
	v.remount(Config{})
	got, err := os.Readlink(v.path("l"))
	if err != nil || got != target {
		t.Errorf("readlink: %q, %v", got, err)
	}
	if st := stat(t, v.path("l")); st.Size != int64(len(target)) {
		t.Errorf("symlink size %d, want %d", st.Size, len(target))
	}
}
