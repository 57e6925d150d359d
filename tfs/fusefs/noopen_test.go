package fusefs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestNoOpenUnlinkedFiles: with Config.NoOpen the kernel sends no OPEN or
// RELEASE, so an unlinked open file is kept alive by the kernel's own
// reference (noopen.go). Its data must survive the volume filling up with
// other files (its blocks are not reused while it is open), and its space
// must come back once it is closed. Both ways to lose the last name count:
// unlink, and a rename over it.
func TestNoOpenUnlinkedFiles(t *testing.T) {
	for _, how := range []string{"unlink", "rename over"} {
		t.Run(how, func(t *testing.T) {
			v := newTestVolume(t, Config{NoOpen: true})
			want := bytes.Repeat([]byte("keep me "), 1<<17) // 1 MiB
			p := v.path("victim")
			if err := os.WriteFile(p, want, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := v.fsys.Sync(); err != nil {
				t.Fatal(err)
			}
			before := freeBlocks(t, v.dir)
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close() // before the cleanup's unmount, which waits for it
			switch how {
			case "unlink":
				err = os.Remove(p)
			default:
				if err = os.WriteFile(v.path("new"), []byte("x"), 0o644); err == nil {
					err = os.Rename(v.path("new"), p)
				}
			}
			if err != nil {
				f.Close()
				t.Fatal(err)
			}
			// Fill the volume: blocks of the unlinked file must not be
			// handed out while it is open.
			chunk := bytes.Repeat([]byte{0xee}, 1<<20)
			for i := 0; ; i++ {
				if err := os.WriteFile(v.path(fmt.Sprintf("fill%d", i)), chunk, 0o644); err != nil {
					if !errors.Is(err, syscall.ENOSPC) {
						t.Fatalf("fill: %v", err)
					}
					break
				}
			}
			if err := v.fsys.Sync(); err != nil && !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			got := make([]byte, len(want))
			if _, err := f.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("an unlinked open file's data changed while the volume filled up")
			}
			f.Close()
			for i := 0; ; i++ {
				if err := os.Remove(v.path(fmt.Sprintf("fill%d", i))); err != nil {
					break
				}
			}
			os.Remove(p)
			// The kernel forgets the node a little after the close:
			// its space comes back then.
			deadline := time.Now().Add(10 * time.Second)
			for {
				if err := v.fsys.Sync(); err != nil {
					t.Fatal(err)
				}
				if free := freeBlocks(t, v.dir); free >= before+len64(want)/2 {
					break
				} else if time.Now().After(deadline) {
					t.Fatalf("%d bytes free 10 s after the last close, want at least %d: the unlinked file's space did not come back", free, before+len64(want)/2)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// TestNoOpenTruncate: without OPEN, O_TRUNC arrives as a
// SETATTR (the kernel does not do it for us) and still truncates.
func TestNoOpenTruncate(t *testing.T) {
	v := newTestVolume(t, Config{NoOpen: true})
	p := v.path("f")
	if err := os.WriteFile(p, []byte("long old content"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	v.remount(Config{NoOpen: true})
	if b, err := os.ReadFile(v.path("f")); err != nil || string(b) != "new" {
		t.Fatalf("after O_TRUNC rewrite and remount: %q, %v", b, err)
	}
}

func freeBlocks(t *testing.T, dir string) uint64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Bfree * uint64(st.Bsize) // bytes
}

func len64(b []byte) uint64 { return uint64(len(b)) }
