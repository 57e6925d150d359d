package tfs

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// Fixtures made by Nanos' own mkfs (../shared/fixtures/nanos-mkfs relative
// to the repository root; TFS_FIXTURES overrides). Missing fixtures fail.

func fixtureDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("TFS_FIXTURES")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "fixtures", "nanos-mkfs")
	}
	if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
		t.Fatalf("fixtures missing at %s (set TFS_FIXTURES): %v", dir, err)
	}
	return dir
}

func loadImage(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join(fixtureDir(t), name+".img.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

type expTime struct {
	Raw *uint64 `json:"raw"`
}

type expEntry struct {
	Path    string   `json:"path"`
	Type    string   `json:"type"`
	Size    *int64   `json:"size"`
	SHA256  string   `json:"sha256"`
	Target  string   `json:"target"`
	Entries *int     `json:"entries"`
	Mtime   *expTime `json:"mtime"`
	Atime   *expTime `json:"atime"`
}

type expected struct {
	ImageSize   int64      `json:"image_size"`
	TFSVersion  int        `json:"tfs_version"`
	Label       string     `json:"label"`
	UUID        string     `json:"uuid"`
	BootUUID    string     `json:"boot_uuid"`
	Entries     []expEntry `json:"entries"`
	BootEntries []expEntry `json:"boot_entries"`
}

func loadExpected(t testing.TB, name string) expected {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir(t), name+".expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e expected
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func fixtureNames(t testing.TB) []string {
	m, err := filepath.Glob(filepath.Join(fixtureDir(t), "*.expected.json"))
	if err != nil || len(m) == 0 {
		t.Fatalf("no fixtures found: %v", err)
	}
	var names []string
	for _, p := range m {
		names = append(names, strings.TrimSuffix(filepath.Base(p), ".expected.json"))
	}
	return names
}

func uuidString(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func testQueue(t testing.TB) *bh.Queue {
	q := bh.NewQueue(2)
	t.Cleanup(q.Close)
	return q
}

// mountMem mounts dev for a test. When the test ends (unless it failed),
// the model's invariants are checked, the volume is closed if the test did
// not close it, and fsck must find the device clean: every test volume
// checks the invariant habit, not only the tests that think of it.
// noCheck(t) turns that off for a test that leaves a volume broken on
// purpose.
func mountMem(t testing.TB, dev blockdev.Device, opts Options) *FS {
	t.Helper()
	if opts.Queue == nil {
		opts.Queue = testQueue(t)
	}
	fs, err := Mount(dev, opts)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() || uncheckedTests[t.Name()] {
			return
		}
		checkInvariants(t, fs)
		if !fs.closed.Load() {
			if err := fs.Close(); err != nil {
				t.Errorf("close at the end of the test: %v", err)
				return
			}
		}
		rep, err := Fsck(dev, Options{Queue: opts.Queue, Partition: opts.Partition})
		if err != nil || !rep.Clean() {
			t.Errorf("fsck at the end of the test: %v %v", rep, err)
		}
	})
	return fs
}

// uncheckedTests are the tests whose volumes mountMem does not check at
// the end: they break them on purpose.
var uncheckedTests = map[string]bool{}

func noCheck(t testing.TB) { uncheckedTests[t.Name()] = true }

// walkTree lists every path under the root with its node.
func walkTree(t testing.TB, fs *FS) map[string]*Node {
	out := map[string]*Node{}
	var walk func(path string, n *Node)
	walk = func(path string, n *Node) {
		out[path] = n
		if n.kind != KindDir {
			return
		}
		ents, err := fs.ReadDir(n)
		if err != nil {
			t.Fatalf("readdir %s: %v", path, err)
		}
		for _, e := range ents {
			c, err := fs.Lookup(n, e.Name)
			if err != nil {
				t.Fatalf("lookup %s/%s: %v", path, e.Name, err)
			}
			p := path + "/" + e.Name
			if path == "/" {
				p = "/" + e.Name
			}
			walk(p, c)
		}
	}
	walk("/", fs.Root())
	return out
}

func readAll(t testing.TB, fs *FS, n *Node) []byte {
	t.Helper()
	size := fs.Getattr(n).Size
	buf := make([]byte, size)
	k, err := fs.Read(n, buf, 0)
	if err != nil || int64(k) != size {
		t.Fatalf("read %d bytes: got %d, %v", size, k, err)
	}
	return buf
}

func checkEntries(t *testing.T, fs *FS, entries []expEntry) {
	t.Helper()
	tree := walkTree(t, fs)
	if len(tree) != len(entries) {
		t.Errorf("%d paths, want %d", len(tree), len(entries))
	}
	for _, e := range entries {
		n, ok := tree[e.Path]
		if !ok {
			t.Errorf("%s: missing", e.Path)
			continue
		}
		if r, err := fs.Resolve(e.Path); err != nil || r != n {
			t.Errorf("%s: Resolve gave %v, %v", e.Path, r, err)
		}
		a := fs.Getattr(n)
		want := map[string]Kind{"file": KindFile, "dir": KindDir, "symlink": KindSymlink}[e.Type]
		if a.Kind != want {
			t.Errorf("%s: kind %d, want %s", e.Path, a.Kind, e.Type)
			continue
		}
		switch e.Type {
		case "file":
			if a.Size != *e.Size {
				t.Errorf("%s: size %d, want %d", e.Path, a.Size, *e.Size)
			}
			sum := sha256.Sum256(readAll(t, fs, n))
			if hex.EncodeToString(sum[:]) != e.SHA256 {
				t.Errorf("%s: sha256 mismatch", e.Path)
			}
		case "symlink":
			target, err := fs.Readlink(n)
			if err != nil || target != e.Target {
				t.Errorf("%s: target %q %v, want %q", e.Path, target, err, e.Target)
			}
		case "dir":
			ents, _ := fs.ReadDir(n)
			if len(ents) != *e.Entries {
				t.Errorf("%s: %d entries, want %d", e.Path, len(ents), *e.Entries)
			}
		}
		for _, tm := range []struct {
			name string
			exp  *expTime
		}{{"mtime", e.Mtime}, {"atime", e.Atime}} {
			got, has := n.t.Attrs[tm.name]
			if tm.exp == nil {
				if has {
					t.Errorf("%s: %s present, want absent", e.Path, tm.name)
				}
				continue
			}
			if tm.exp.Raw == nil {
				continue // set by the FUSE driver in whole seconds, raw not recorded
			}
			v, _ := format.NumberOf(got)
			if v != *tm.exp.Raw {
				t.Errorf("%s: %s raw %d, want %d", e.Path, tm.name, v, *tm.exp.Raw)
			}
			want := format.Time(*tm.exp.Raw)
			at := a.Mtime
			if tm.name == "atime" {
				at = a.Atime
			}
			// Exact from timespec to raw and back (docs/format.md, "Times");
			// not every raw value is the image of a timespec.
			if !at.Equal(want) || !format.Time(format.Timestamp(at)).Equal(at) {
				t.Errorf("%s: %s %v (raw %d) does not round-trip", e.Path, tm.name, at, *tm.exp.Raw)
			}
		}
	}
}

func TestFixturesRead(t *testing.T) {
	skipUnderRace(t, "reads the large Nanos fixtures on one goroutine")
	for _, name := range fixtureNames(t) {
		t.Run(name, func(t *testing.T) {
			exp := loadExpected(t, name)
			data := loadImage(t, name)
			if int64(len(data)) != exp.ImageSize {
				t.Fatalf("image is %d bytes, want %d", len(data), exp.ImageSize)
			}
			q := testQueue(t)
			fs := mountMem(t, blockdev.NewMemoryFrom(q, data, true), Options{Queue: q})
			defer fs.Close()
			if fs.Label() != exp.Label || (exp.UUID != "" && uuidString(fs.UUID()) != exp.UUID) {
				t.Errorf("label %q uuid %s, want %q %s", fs.Label(), uuidString(fs.UUID()), exp.Label, exp.UUID)
			}
			if v := fs.log.Exts[0].Version; v != exp.TFSVersion {
				t.Errorf("version %d, want %d", v, exp.TFSVersion)
			}
			checkEntries(t, fs, exp.Entries)
			if exp.BootEntries != nil {
				bfs := mountMem(t, blockdev.NewMemoryFrom(q, data, true), Options{Queue: q, Partition: "boot"})
				defer bfs.Close()
				if uuidString(bfs.UUID()) != exp.BootUUID {
					t.Errorf("boot uuid %s, want %s", uuidString(bfs.UUID()), exp.BootUUID)
				}
				checkEntries(t, bfs, exp.BootEntries)
			}
		})
	}
}

// Block 0 as Nanos's mkfs wrote it for a raw volume labelled "demo" with
// this UUID, linking to a 1024-block extension at block 1, byte for byte.
func TestInitialBlockBytes(t *testing.T) {
	blk := format.InitialBlock([16]byte{0xc9, 0xc9, 0xe6, 0x03, 0xe5, 0x56, 0xda, 0xc7, 0x5a, 0x67, 0x33, 0x9a, 0x83, 0xf2, 0xc8, 0xb0}, "demo", 1, 1024)
	want := strings.ReplaceAll("4e564d54465305 01 c9c9e603e556dac75a67339a83f2c8b0 64656d6f00 05018800 01", " ", "")
	if h := hex.EncodeToString(blk[:0x22]); h != want {
		t.Errorf("block 0: %s\nwant      %s", h, want)
	}
	if !bytes.Equal(blk[0x22:], make([]byte, format.BlockSize-0x22)) {
		t.Error("block 0 not zero after END_OF_LOG")
	}
}
