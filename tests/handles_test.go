package tests

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// byHandle opens h on the mount at dir with open_by_handle_at(2).
func byHandle(t *testing.T, dir string, h unix.FileHandle, flags int) (*os.File, error) {
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

func sha256Of(t *testing.T, f *os.File) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// File handles taken on a Nanos-made image open the same files after the
// daemon exited and the image was mounted again (inode numbers come from
// the log, which every mount reads alike).
func TestFileHandlesSurviveRemount(t *testing.T) {
	tested := 0
	for _, name := range fixtureNames(t) {
		t.Run(name, func(t *testing.T) {
			exp := loadExpected(t, name)
			img := gunzipFixture(t, name)
			m := mountImage(t, img, "ro")
			handles := map[string]unix.FileHandle{}
			var files, dirs []expectedEntry
			for _, e := range exp.Entries {
				if (e.Type != "file" && e.Type != "dir") || len(handles) >= 40 {
					continue
				}
				h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, m.Path(e.Path), 0)
				if err != nil {
					t.Fatalf("name_to_handle_at %s: %v", e.Path, err)
				}
				handles[e.Path] = h
				if e.Type == "file" {
					files = append(files, e)
				} else {
					dirs = append(dirs, e)
				}
			}
			m.Unmount()
			m = mountImage(t, img, "ro")
			defer m.Unmount()
			for _, e := range files {
				f, err := byHandle(t, m.Dir, handles[e.Path], os.O_RDONLY)
				if err != nil {
					t.Fatalf("%s: open by handle after a remount: %v", e.Path, err)
				}
				if got := sha256Of(t, f); got != e.SHA256 {
					t.Errorf("%s by handle: sha256 %s, want %s", e.Path, got, e.SHA256)
				}
				f.Close()
			}
			for _, e := range dirs {
				f, err := byHandle(t, m.Dir, handles[e.Path], os.O_RDONLY|unix.O_DIRECTORY)
				if err != nil {
					t.Fatalf("%s: open directory by handle after a remount: %v", e.Path, err)
				}
				names, err := f.Readdirnames(-1)
				f.Close()
				if err != nil || len(names) != e.Children {
					t.Errorf("%s by handle: %d entries (%v), want %d", e.Path, len(names), err, e.Children)
				}
			}
			tested += len(files)
		})
	}
	if tested == 0 {
		t.Fatal("no fixture has a regular file to test")
	}
}

// On a writable mount, handles open files and directories while cached,
// after the kernel forgot them (drop_caches: the daemon is asked by
// number) and after a remount, reconnecting directories through their
// parents. A removed file's handle is ESTALE at once and after a remount;
// after `tfsmount compact` every old handle is ESTALE, never another file.
func TestFileHandlesOnWritableMount(t *testing.T) {
	img := newImage(t, "64M")
	m := mountImage(t, img)
	if err := os.MkdirAll(m.Path("d", "e"), 0o755); err != nil {
		t.Fatal(err)
	}
	handle := func(rel ...string) unix.FileHandle {
		t.Helper()
		h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, m.Path(rel...), 0)
		if err != nil {
			t.Fatalf("name_to_handle_at %s: %v", path.Join(rel...), err)
		}
		return h
	}
	var files []string // names in d/e
	var handles []unix.FileHandle
	for i := 0; i < 20; i++ {
		name := string(rune('a' + i))
		if err := os.WriteFile(m.Path("d", "e", name), []byte("content of "+name), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, name)
		handles = append(handles, handle("d", "e", name))
	}
	dirs := map[string]unix.FileHandle{"d": handle("d"), "d/e": handle("d", "e")}
	inos := map[string]uint64{}
	for dir := range dirs {
		fi, err := os.Stat(m.Path(dir))
		if err != nil {
			t.Fatal(err)
		}
		inos[dir] = fi.Sys().(*syscall.Stat_t).Ino
	}
	removed := map[int]bool{}
	check := func(when string) {
		t.Helper()
		for i, h := range handles {
			f, err := byHandle(t, m.Dir, h, os.O_RDONLY)
			if removed[i] {
				if f != nil {
					f.Close()
				}
				if !errors.Is(err, unix.ESTALE) {
					t.Fatalf("%s: removed file %s by handle: %v, want ESTALE", when, files[i], err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: open %s by handle: %v", when, files[i], err)
			}
			b, err := io.ReadAll(f)
			f.Close()
			if err != nil || string(b) != "content of "+files[i] {
				t.Fatalf("%s: %s by handle reads %q, %v", when, files[i], b, err)
			}
		}
		for dir, h := range dirs {
			f, err := byHandle(t, m.Dir, h, os.O_RDONLY|unix.O_DIRECTORY)
			if err != nil {
				t.Fatalf("%s: open %s by handle: %v", when, dir, err)
			}
			fi, err := f.Stat()
			names, rerr := f.Readdirnames(-1)
			f.Close()
			if err != nil || fi.Sys().(*syscall.Stat_t).Ino != inos[dir] {
				t.Errorf("%s: %s by handle is another inode (%v)", when, dir, err)
			}
			want := 1 + len(removed) // d holds e and a new file per removed one
			if dir == "d/e" {
				want = len(files) - len(removed)
			}
			if rerr != nil || len(names) != want {
				t.Errorf("%s: %s by handle lists %d entries (%v), want %d", when, dir, len(names), rerr, want)
			}
		}
	}
	check("while cached")
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
		t.Fatalf("drop caches: %v", err)
	}
	check("after drop_caches")
	// Removing and creating files also shuffles what a compacted log
	// numbers where.
	for i := 0; i < len(files); i += 2 {
		if err := os.Remove(m.Path("d", "e", files[i])); err != nil {
			t.Fatal(err)
		}
		removed[i] = true
		if err := os.WriteFile(m.Path("d", "new"+files[i]), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	check("after removing half the files")
	m = m.remount()
	check("after a remount")
	m.finish()
	mustRun(t, "compact", img)
	m = mountImage(t, img)
	defer m.finish()
	for i, h := range handles {
		f, err := byHandle(t, m.Dir, h, os.O_RDONLY)
		if err == nil {
			f.Close()
			t.Fatalf("handle of %s from before the compaction opened a file", files[i])
		}
		if !errors.Is(err, unix.ESTALE) {
			t.Fatalf("handle of %s from before the compaction: %v, want ESTALE", files[i], err)
		}
	}
}
