package tests

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hostileImage makes a volume whose entries a crafted image could hold: a
// symlink pointing out of any destination, files whose names, patched in
// the log after mkfs, contain '/' (one climbs out of the destination with
// "..", one names a path below a directory), beside ordinary files.
// placeholders maps each patched name to the name it had.
func hostileImage(t *testing.T, outside string) (img string, good map[string]string) {
	t.Helper()
	tree := filepath.Join(t.TempDir(), "tree")
	good = map[string]string{"g": "file g\n", "h": "file h\n", "d/f": "file d/f\n", "plain": "plain\n"}
	for rel, content := range good {
		p := filepath.Join(tree, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{"x_.._.._.._escaped": "escaped\n", "y_z": "below\n"} {
		if err := os.WriteFile(filepath.Join(tree, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(tree, "evil")); err != nil {
		t.Fatal(err)
	}
	img = filepath.Join(t.TempDir(), "hostile.img")
	mustRun(t, "mkfs", "--size", "32M", "--from", tree, img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{"x_.._.._.._escaped": "x/../../../escaped", "y_z": "y/z"} {
		if bytes.Count(b, []byte(from)) != 1 {
			t.Fatalf("name %q appears %d times in the log", from, bytes.Count(b, []byte(from)))
		}
		b = bytes.Replace(b, []byte(from), []byte(to), 1)
	}
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return img, good
}

// TestHostileImageEntries: one malformed entry never hides a volume. A
// read-only mount, ls and get show every other file exactly; a writable
// mount is refused with what to do; fsck reports the entries and fsck
// --repair renames them into something Linux can use; get never writes
// outside its destination, whether through names, symlinks in the image,
// or symlinks and hard links already in the destination.
func TestHostileImageEntries(t *testing.T) {
	requireFUSE(t)
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	os.Mkdir(outside, 0o755)
	img, good := hostileImage(t, outside)

	// Read-only mount: the rest is there.
	m := mountImage(t, img, "ro")
	for rel, content := range good {
		if b, err := os.ReadFile(m.Path(rel)); err != nil || string(b) != content {
			t.Errorf("ro mount: %s: %q %v", rel, b, err)
		}
	}
	ents, _ := os.ReadDir(m.Path())
	for _, e := range ents {
		if strings.Contains(e.Name(), "escaped") || e.Name() == "y" {
			t.Errorf("ro mount shows the malformed entry %q", e.Name())
		}
	}
	m.Unmount()

	// A writable mount is refused, saying why and what to do.
	dir := filepath.Join(t.TempDir(), "rw")
	os.Mkdir(dir, 0o755)
	if _, err := startMount(t, img, dir); err == nil || !strings.Contains(err.Error(), "fsck --repair") || !strings.Contains(err.Error(), "-o ro") {
		t.Errorf("writable mount of a volume with malformed entries: %v", err)
	}

	// ls and get: the rest, nothing outside the destination.
	ls := mustRun(t, "ls", "-R", img)
	for _, want := range []string{"plain", "evil", "d"} {
		if !strings.Contains(string(ls.Stdout), want) {
			t.Errorf("ls -R does not show %s:\n%s", want, ls.Stdout)
		}
	}
	deep := filepath.Join(base, "a", "b", "dest")
	os.MkdirAll(deep, 0o755)
	// The destination already holds a symlink and a hard link to files
	// outside it, where the image has files g and h.
	victimG := filepath.Join(outside, "victim-g")
	victimH := filepath.Join(outside, "victim-h")
	os.WriteFile(victimG, []byte("keep g\n"), 0o644)
	os.WriteFile(victimH, []byte("keep h\n"), 0o644)
	os.Symlink(victimG, filepath.Join(deep, "g"))
	if err := os.Link(victimH, filepath.Join(deep, "h")); err != nil {
		t.Fatal(err)
	}
	res := runTool(t, time.Minute, "get", img, "/", deep)
	if res.Err != nil {
		t.Fatalf("get: %s", res)
	}
	for rel, content := range good {
		if b, err := os.ReadFile(filepath.Join(deep, rel)); err != nil || string(b) != content {
			t.Errorf("get: %s: %q %v", rel, b, err)
		}
	}
	for victim, content := range map[string]string{victimG: "keep g\n", victimH: "keep h\n"} {
		if b, _ := os.ReadFile(victim); string(b) != content {
			t.Errorf("get wrote through the destination into %s: %q", victim, b)
		}
	}
	if l, err := os.Readlink(filepath.Join(deep, "evil")); err != nil || l != outside {
		t.Errorf("get: evil is not the symlink it is in the image: %q %v", l, err)
	}
	for _, p := range []string{filepath.Join(base, "a", "escaped"), filepath.Join(base, "escaped"), filepath.Join(deep, "y")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("get created %s", p)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 2 {
		t.Errorf("get wrote into the directory the image's symlink points at: %v", ents)
	}
	// A destination whose directory d is a symlink out: an error, and
	// nothing written there.
	dest2 := filepath.Join(base, "dest2")
	os.Mkdir(dest2, 0o755)
	os.Symlink(outside, filepath.Join(dest2, "d"))
	if res := runTool(t, time.Minute, "get", img, "/", dest2); res.Err == nil || !strings.Contains(string(res.Stderr), "not a directory") {
		t.Errorf("get into a destination whose d is a symlink: %s", res)
	}
	if _, err := os.Lstat(filepath.Join(outside, "f")); err == nil {
		t.Errorf("get wrote d/f through a symlink in the destination")
	}

	// fsck reports, --repair renames, and then everything mounts.
	if res := runTool(t, time.Minute, "fsck", img); exitCode(res) != 4 || !strings.Contains(string(res.Stdout), "entry skipped") {
		t.Errorf("fsck: exit %d, want 4 naming the skipped entries:\n%s", exitCode(res), res)
	}
	if res := runTool(t, time.Minute, "fsck", "--repair", img); exitCode(res) != 1 {
		t.Errorf("fsck --repair: exit %d, want 1:\n%s", exitCode(res), res)
	}
	requireFsckClean(t, img)
	m = mountImage(t, img)
	for rel, content := range map[string]string{"x..........escaped": "escaped\n", "y.z": "below\n", "plain": "plain\n"} {
		if b, err := os.ReadFile(m.Path(rel)); err != nil || string(b) != content {
			t.Errorf("after repair: %s: %q %v", rel, b, err)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(m.Path("evil"), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Errorf("after repair: evil: %v", err)
	}
	m.Unmount()
	requireFsckClean(t, img)
}
