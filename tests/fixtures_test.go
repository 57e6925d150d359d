package tests

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// expectedImage is the part of NAME.expected.json the tests check.
type expectedImage struct {
	ImageSize   int64           `json:"image_size"`
	ImageSHA256 string          `json:"image_sha256"`
	BootOffset  *int64          `json:"boot_tfs_offset"` // set for partitioned images
	Entries     []expectedEntry `json:"entries"`
	BootEntries []expectedEntry `json:"boot_entries"`
}

// expectedEntry is one path of a fixture.
type expectedEntry struct {
	Path     string        `json:"path"`
	Type     string        `json:"type"` // file, dir, symlink
	Size     int64         `json:"size"`
	SHA256   string        `json:"sha256"`
	Target   string        `json:"target"`
	Children int           `json:"entries"`
	Mtime    *expectedTime `json:"mtime"`
}

type expectedTime struct {
	UnixSec int64 `json:"unix_sec"`
}

// fixtureNames lists every NAME with a NAME.img.gz and NAME.expected.json.
func fixtureNames(t *testing.T) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(fixtureDir(t), "*.expected.json"))
	if err != nil || len(matches) == 0 {
		t.Fatalf("no *.expected.json in %s (%v)", fixtureDir(t), err)
	}
	var names []string
	for _, m := range matches {
		names = append(names, strings.TrimSuffix(filepath.Base(m), ".expected.json"))
	}
	sort.Strings(names)
	return names
}

func loadExpected(t *testing.T, name string) expectedImage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir(t), name+".expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e expectedImage
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("parse %s.expected.json: %v", name, err)
	}
	if len(e.Entries) == 0 {
		t.Fatalf("%s.expected.json lists no entries", name)
	}
	return e
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatalf("open %q: %v", p, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %q: %v", p, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func sha256Bytes(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// checkTreeMatches compares the tree under root (a mount point) against the
// expected entries: same set of paths, types, sizes, content hashes, link
// targets, child counts and, where the JSON has one, mtime seconds.
func checkTreeMatches(t *testing.T, root string, want []expectedEntry) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			t.Errorf("walk %q: %v", p, err)
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			seen["/"] = true
		} else {
			seen["/"+filepath.ToSlash(rel)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range want {
		if !seen[e.Path] {
			t.Errorf("%s: missing from the mount", e.Path)
			continue
		}
		delete(seen, e.Path)
		checkEntry(t, filepath.Join(root, filepath.FromSlash(e.Path)), e)
	}
	for p := range seen {
		t.Errorf("%s: on the mount but not expected", p)
	}
}

func checkEntry(t *testing.T, p string, e expectedEntry) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Errorf("%s: lstat: %v", e.Path, err)
		return
	}
	switch e.Type {
	case "dir":
		if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			t.Errorf("%s: mode %o, want a directory", e.Path, st.Mode)
			return
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			t.Errorf("%s: readdir: %v", e.Path, err)
		} else if len(ents) != e.Children {
			t.Errorf("%s: %d entries, want %d", e.Path, len(ents), e.Children)
		}
	case "file":
		if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			t.Errorf("%s: mode %o, want a regular file", e.Path, st.Mode)
			return
		}
		if st.Size != e.Size {
			t.Errorf("%s: size %d, want %d", e.Path, st.Size, e.Size)
		}
		if got := sha256File(t, p); got != e.SHA256 {
			t.Errorf("%s: sha256 %s, want %s", e.Path, got, e.SHA256)
		}
	case "symlink":
		if st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
			t.Errorf("%s: mode %o, want a symlink", e.Path, st.Mode)
			return
		}
		target, err := os.Readlink(p)
		if err != nil {
			t.Errorf("%s: readlink: %v", e.Path, err)
		} else if target != e.Target {
			t.Errorf("%s: target %q, want %q", e.Path, target, e.Target)
		}
		if st.Size != int64(len(e.Target)) {
			t.Errorf("%s: symlink size %d, want %d", e.Path, st.Size, len(e.Target))
		}
	default:
		t.Errorf("%s: unknown type %q in the JSON", e.Path, e.Type)
	}
	if e.Mtime != nil && st.Mtim.Sec != e.Mtime.UnixSec {
		t.Errorf("%s: mtime %d, want %d", e.Path, st.Mtim.Sec, e.Mtime.UnixSec)
	}
}

// TestFixturesMount mounts every Nanos-made fixture read-only and read-write
// and compares the whole tree with its expected JSON; partitioned images are
// also mounted with partition=boot and compared with boot_entries.
func TestFixturesMount(t *testing.T) {
	for _, name := range fixtureNames(t) {
		t.Run(name, func(t *testing.T) {
			exp := loadExpected(t, name)
			img := gunzipFixture(t, name)
			if st, err := os.Stat(img); err != nil || st.Size() != exp.ImageSize {
				t.Fatalf("gunzipped %s: %v, size want %d", name, err, exp.ImageSize)
			}
			if got := sha256File(t, img); got != exp.ImageSHA256 {
				t.Fatalf("gunzipped %s sha256 %s, want %s", name, got, exp.ImageSHA256)
			}
			t.Run("ro", func(t *testing.T) {
				m := mountImage(t, img, "ro")
				checkTreeMatches(t, m.Dir, exp.Entries)
				m.Unmount()
				if got := sha256File(t, img); got != exp.ImageSHA256 {
					t.Errorf("a read-only mount changed the image")
				}
			})
			t.Run("rw", func(t *testing.T) {
				m := mountImage(t, img, "rw")
				checkTreeMatches(t, m.Dir, exp.Entries)
				m.finish()
			})
			if exp.BootOffset != nil {
				t.Run("root-explicit", func(t *testing.T) {
					m := mountImage(t, img, "ro", "partition=root")
					checkTreeMatches(t, m.Dir, exp.Entries)
					m.Unmount()
				})
				t.Run("boot", func(t *testing.T) {
					m := mountImage(t, img, "ro", "partition=boot")
					if len(exp.BootEntries) > 0 {
						checkTreeMatches(t, m.Dir, exp.BootEntries)
					} else if _, err := os.ReadDir(m.Dir); err != nil {
						// The JSON does not list this boot volume;
						// it must still mount and read.
						t.Errorf("boot volume of %s: readdir: %v", name, err)
					}
					m.Unmount()
					requireFsckClean(t, img, "--partition", "boot")
				})
			}
		})
	}
}

// TestFixturesFsck checks that fsck calls every pristine Nanos image clean.
func TestFixturesFsck(t *testing.T) {
	for _, name := range fixtureNames(t) {
		t.Run(name, func(t *testing.T) {
			img := gunzipFixture(t, name)
			requireFsckClean(t, img)
		})
	}
}

// TestFixturesOffline checks that ls -R, cat and get agree with the JSON
// without any mount.
func TestFixturesOffline(t *testing.T) {
	for _, name := range fixtureNames(t) {
		t.Run(name, func(t *testing.T) {
			exp := loadExpected(t, name)
			img := gunzipFixture(t, name)
			checkLsR(t, img, exp.Entries)
			dest := filepath.Join(t.TempDir(), "out")
			for _, e := range offlineSample(exp.Entries, 24) {
				r := mustRun(t, "cat", img, e.Path)
				if got := sha256Bytes(r.Stdout); got != e.SHA256 {
					t.Errorf("cat %s: %d bytes, sha256 %s, want %d bytes %s", e.Path, len(r.Stdout), got, e.Size, e.SHA256)
				}
				os.Remove(dest)
				mustRun(t, "get", img, e.Path, dest)
				if got := sha256File(t, dest); got != e.SHA256 {
					t.Errorf("get %s: sha256 %s, want %s", e.Path, got, e.SHA256)
				}
			}
			for _, e := range exp.BootEntries {
				if e.Type != "file" {
					continue
				}
				r := mustRun(t, "cat", "--partition", "boot", img, e.Path)
				if got := sha256Bytes(r.Stdout); got != e.SHA256 {
					t.Errorf("cat --partition boot %s: sha256 %s, want %s", e.Path, got, e.SHA256)
				}
			}
			if got := sha256File(t, img); got != exp.ImageSHA256 {
				t.Errorf("offline reading changed the image")
			}
		})
	}
}

// checkLsR runs `ls -R IMAGE` and checks that every expected path is listed
// and nothing else is. It accepts the two usual shapes of a recursive
// listing: one full path per line, or GNU-style "DIR:" headers followed by
// the names in that directory.
func checkLsR(t *testing.T, img string, want []expectedEntry) {
	t.Helper()
	r := mustRun(t, "ls", "-R", img)
	got := parseLsR(string(r.Stdout))
	wantSet := map[string]bool{}
	for _, e := range want {
		if e.Path != "/" {
			wantSet[e.Path] = true
		}
	}
	for p := range wantSet {
		if !got[p] {
			t.Errorf("ls -R: %s not listed", p)
		}
	}
	for p := range got {
		if !wantSet[p] {
			t.Errorf("ls -R: lists %q, which is not in the image", p)
		}
	}
}

func parseLsR(out string) map[string]bool {
	got := map[string]bool{}
	dir := ""
	for _, line := range strings.Split(out, "\n") {
		if line == "" {
			continue
		}
		if strings.HasSuffix(line, ":") && strings.HasPrefix(line, "/") {
			dir = strings.TrimSuffix(line, ":")
			continue
		}
		// A symlink may be shown as "name -> target"; a directory with a
		// trailing slash.
		name := line
		if i := strings.Index(name, " -> "); i >= 0 {
			name = name[:i]
		}
		name = strings.TrimSuffix(name, "/")
		if strings.HasPrefix(name, "/") {
			got[path.Clean(name)] = true
		} else if dir != "" {
			got[path.Join(dir, name)] = true
		} else {
			got["/"+name] = true
		}
	}
	delete(got, "/")
	return got
}

// offlineSample picks at most n files, spread evenly over the listing and
// always including the largest, so each offline command (one process per
// file) is tried on every kind of fixture without a long run on many10k.
func offlineSample(entries []expectedEntry, n int) []expectedEntry {
	var files []expectedEntry
	largest := -1
	for _, e := range entries {
		if e.Type == "file" {
			if largest < 0 || e.Size > files[largest].Size {
				largest = len(files)
			}
			files = append(files, e)
		}
	}
	if len(files) <= n {
		return files
	}
	var out []expectedEntry
	for i := 0; i < n-1; i++ {
		out = append(out, files[i*len(files)/(n-1)])
	}
	return append(out, files[largest])
}
