package tests

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path"
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

// After `tfsmount compact`, handles from before are stale: ESTALE, never
// another file.
func TestFileHandlesStaleAfterCompaction(t *testing.T) {
	img := newImage(t, "64M")
	m := mountImage(t, img)
	var handles []unix.FileHandle
	for i := 0; i < 20; i++ {
		p := m.Path("d", string(rune('a'+i)))
		if err := os.MkdirAll(path.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
		h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, p, 0)
		if err != nil {
			t.Fatal(err)
		}
		handles = append(handles, h)
	}
	// Deleting and re-creating files shuffles what the compacted log
	// numbers where.
	for i := 0; i < 20; i += 2 {
		p := m.Path("d", string(rune('a'+i)))
		os.Remove(p)
		if err := os.WriteFile(m.Path("d", "new"+string(rune('a'+i))), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m.finish()
	mustRun(t, "compact", img)
	m = mountImage(t, img)
	defer m.finish()
	for i, h := range handles {
		f, err := byHandle(t, m.Dir, h, os.O_RDONLY)
		if err == nil {
			f.Close()
			t.Fatalf("handle %d from before the compaction opened a file", i)
		}
		if !errors.Is(err, unix.ESTALE) {
			t.Fatalf("handle %d from before the compaction: %v, want ESTALE", i, err)
		}
	}
}
