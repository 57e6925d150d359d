package fusefs

import (
	"log"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// testVolume is a TFS volume on a memory device, mounted in-process.
type testVolume struct {
	t      testing.TB
	q      *bh.Queue
	dev    *blockdev.Memory
	fsys   *tfs.FS
	root   *node
	server *Server
	dir    string
}

// newTestVolume makes an empty 64 MiB volume and mounts it with cfg in a
// temporary directory. Cleanup unmounts, closes the volume and runs fsck.
func newTestVolume(t testing.TB, cfg Config) *testVolume {
	t.Helper()
	q := bh.NewQueue(2)
	dev := blockdev.NewMemory(q, 64<<20)
	if err := format.Mkfs(dev, format.MkfsOptions{Label: "fusefs-test"}); err != nil {
		t.Fatalf("mkfs: %v", err)
	}
	v := &testVolume{t: t, q: q, dev: dev}
	v.mount(cfg)
	t.Cleanup(func() {
		v.unmount()
		rep, err := tfs.Fsck(dev, tfs.Options{ReadOnly: true, Queue: q})
		if err != nil {
			t.Errorf("fsck after test: %v", err)
		} else if !rep.Clean() {
			t.Errorf("fsck after test: %s", rep)
		}
		q.Close()
	})
	return v
}

func (v *testVolume) mount(cfg Config) {
	t := v.t
	t.Helper()
	fsys, err := tfs.Mount(v.dev, tfs.Options{Queue: v.q})
	if err != nil {
		t.Fatalf("tfs mount: %v", err)
	}
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	v.fsys = fsys
	v.root = NewRoot(fsys, cfg).(*node)
	v.dir = t.TempDir()
	var logger *log.Logger
	if testing.Verbose() && os.Getenv("FUSEFS_DEBUG") != "" {
		logger = log.New(os.Stderr, "fuse: ", 0)
	}
	v.server, err = Mount(v.dir, v.root, MountOptions{FsName: "fusefs-test", Debug: logger != nil, Logger: logger})
	if err != nil {
		fsys.Close()
		t.Fatalf("fuse mount: %v", err)
	}
}

// unmount unmounts and writes everything back (as the daemon does).
func (v *testVolume) unmount() {
	t := v.t
	if v.server == nil {
		return
	}
	if err := v.server.Unmount(); err != nil {
		t.Errorf("unmount: %v", err)
	}
	v.server.Wait()
	v.server = nil
	if err := v.fsys.Close(); err != nil {
		t.Errorf("close volume: %v", err)
	}
	if n := v.root.m.errors.Load(); n != 0 {
		t.Errorf("%d requests failed with unexpected errors (see log)", n)
	}
}

// remount unmounts and mounts the same device again, so that what a test
// sees next was read back from the image.
func (v *testVolume) remount(cfg Config) {
	v.unmount()
	v.mount(cfg)
}

func (v *testVolume) path(name string) string { return v.dir + "/" + name }

// TestMountSourceAndType checks what findmnt, umount IMAGE and df -T rely
// on: the source is the FsName exactly, the type plain "fuse".
func TestMountSourceAndType(t *testing.T) {
	v := newTestVolume(t, Config{})
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[4] != v.dir {
			continue
		}
		sep := slices.Index(f, "-")
		if sep < 0 || sep+2 >= len(f) {
			t.Fatalf("malformed mountinfo line %q", line)
		}
		if fstype, source := f[sep+1], f[sep+2]; fstype != "fuse" || source != "fusefs-test" {
			t.Errorf("mount type %q source %q, want fuse and fusefs-test", fstype, source)
		}
		return
	}
	t.Fatalf("%s not in /proc/self/mountinfo", v.dir)
}
