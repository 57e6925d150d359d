package fusefs

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// openByHandle opens h on the mount at dir, as open_by_handle_at(2) does.
func openByHandle(t *testing.T, dir string, h unix.FileHandle, flags int) (*os.File, error) {
	t.Helper()
	mfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(mfd)
	fd, err := unix.OpenByHandleAt(mfd, h, flags)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "by-handle"), nil
}

func inoOf(t *testing.T, f *os.File) uint64 {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// File handles stay valid after the kernel forgot the node and after a
// remount, reconnect directories through their parents, and are stale
// (ESTALE) once the file is gone. xfstests generic/426 and generic/477
// test the same.
func TestFileHandles(t *testing.T) {
	v := newTestVolume(t, Config{})
	if err := os.MkdirAll(v.path("d/e"), 0755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"d/e/f", "g"} {
		if err := os.WriteFile(v.path(name), []byte("content of "+name), 0644); err != nil {
			t.Fatal(err)
		}
	}
	type entry struct {
		h   unix.FileHandle
		ino uint64
	}
	got := map[string]entry{}
	for _, name := range []string{"d/e/f", "d/e", "d", "g"} {
		h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, v.path(name), 0)
		if err != nil {
			t.Fatalf("name_to_handle_at %s: %v", name, err)
		}
		var st unix.Stat_t
		if err := unix.Stat(v.path(name), &st); err != nil {
			t.Fatal(err)
		}
		got[name] = entry{h, st.Ino}
	}
	check := func(when string) {
		t.Helper()
		f, err := openByHandle(t, v.dir, got["d/e/f"].h, os.O_RDONLY)
		if err != nil {
			t.Fatalf("%s: open d/e/f by handle: %v", when, err)
		}
		buf := make([]byte, 64)
		n, err := f.Read(buf)
		f.Close()
		if err != nil || string(buf[:n]) != "content of d/e/f" {
			t.Fatalf("%s: read d/e/f by handle: %q, %v", when, buf[:n], err)
		}
		for _, dir := range []string{"d/e", "d"} {
			f, err := openByHandle(t, v.dir, got[dir].h, os.O_RDONLY|unix.O_DIRECTORY)
			if err != nil {
				t.Fatalf("%s: open %s by handle: %v", when, dir, err)
			}
			if ino := inoOf(t, f); ino != got[dir].ino {
				t.Errorf("%s: %s by handle has ino %d, want %d", when, dir, ino, got[dir].ino)
			}
			names, err := f.Readdirnames(-1)
			f.Close()
			if err != nil || len(names) != 1 {
				t.Errorf("%s: %s by handle lists %v, %v", when, dir, names, err)
			}
		}
	}
	check("while cached")
	// Make the kernel forget the nodes (FORGET reaches the daemon).
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
		t.Fatalf("drop caches: %v", err)
	}
	check("after drop_caches")
	v.remount(Config{})
	check("after a remount")

	if err := os.Remove(v.path("g")); err != nil {
		t.Fatal(err)
	}
	if f, err := openByHandle(t, v.dir, got["g"].h, os.O_RDONLY); !errors.Is(err, unix.ESTALE) {
		if f != nil {
			f.Close()
		}
		t.Fatalf("open of a removed file by handle: %v, want ESTALE", err)
	}
	v.remount(Config{})
	if _, err := openByHandle(t, v.dir, got["g"].h, os.O_RDONLY); !errors.Is(err, unix.ESTALE) {
		t.Fatalf("open of a removed file by handle after a remount: %v, want ESTALE", err)
	}
	check("after removing another file and a remount")
}
