package tests

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCorruptImages damages the log region of a fixture in many seeded ways.
// Whatever the damage, fsck and ls finish in time without a panic (fsck may
// and usually should report problems), and a mount either is refused with a
// message or serves the tree without the daemon dying.
func TestCorruptImages(t *testing.T) {
	pristine := gunzipFixture(t, "tree")
	orig, err := os.ReadFile(pristine)
	if err != nil {
		t.Fatal(err)
	}
	const nseeds = 40
	flagged, mounted, repaired := 0, 0, 0
	defer func() {
		t.Logf("fsck flagged %d of %d damaged images; %d mounted; fsck --repair repaired %d", flagged, nseeds, mounted, repaired)
		if flagged == 0 {
			t.Errorf("fsck called every damaged image clean: the damage missed the log or fsck misses it")
		}
	}()
	for seed := int64(1); seed <= nseeds; seed++ {
		r := rand.New(rand.NewSource(seed))
		img := filepath.Join(t.TempDir(), "corrupt.img")
		b := bytes.Clone(orig)
		// The log starts at sector 0 of a bare volume; damage its first
		// 8 KiB, where the dictionary and directory records live.
		for i := 0; i < 1+r.Intn(24); i++ {
			b[r.Intn(8<<10)] = byte(r.Intn(256))
		}
		if err := os.WriteFile(img, b, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"fsck", img}, {"ls", "-R", img}} {
			res := runTool(t, time.Minute, args...)
			if crashed(res) || (res.Err != nil && strings.Contains(res.Err.Error(), "timed out")) {
				t.Errorf("seed %d: tfsmount %s crashed or hung: %s", seed, strings.Join(args, " "), res)
			}
			if args[0] == "fsck" && res.Err != nil {
				flagged++
			}
		}
		// fsck --repair on a copy: it may give up (exit 8 when even the
		// root record is gone, 4 when problems are left), but what it calls
		// repaired (exit 0 or 1) checks clean and mounts read-write.
		fixed := filepath.Join(t.TempDir(), "repaired.img")
		if err := os.WriteFile(fixed, b, 0o644); err != nil {
			t.Fatal(err)
		}
		res := runTool(t, time.Minute, "fsck", "--repair", fixed)
		if crashed(res) || (res.Err != nil && strings.Contains(res.Err.Error(), "timed out")) {
			t.Errorf("seed %d: fsck --repair crashed or hung: %s", seed, res)
		}
		if code := exitCode(res); code == 0 || code == 1 {
			repaired++
			requireFsckClean(t, fixed)
			dir := filepath.Join(t.TempDir(), "rw")
			os.Mkdir(dir, 0o755)
			m, err := startMount(t, fixed, dir)
			if err != nil {
				t.Errorf("seed %d: read-write mount after fsck --repair: %v", seed, err)
			} else {
				if err := os.WriteFile(filepath.Join(dir, "after-repair"), []byte("ok"), 0o644); err != nil {
					t.Errorf("seed %d: write after repair: %v", seed, err)
				}
				m.Unmount()
				requireFsckClean(t, fixed)
			}
		}
		dir := filepath.Join(t.TempDir(), "mnt")
		os.Mkdir(dir, 0o755)
		m, err := startMount(t, img, dir, "ro")
		if err != nil {
			if strings.Contains(err.Error(), "panic") || strings.Contains(err.Error(), "goroutine ") {
				t.Errorf("seed %d: mount of a damaged image panicked: %v", seed, err)
			}
			continue
		}
		mounted++
		filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
			if err == nil && info.Mode().IsRegular() {
				os.ReadFile(p) // EIO is fine; a dead daemon is not
			}
			return nil
		})
		m.Unmount() // fails the test unless the daemon exits 0
	}
}

// crashed reports a Go panic or a fatal signal in a tool's run.
func crashed(r cmdResult) bool {
	return bytes.Contains(r.Stderr, []byte("panic:")) || bytes.Contains(r.Stderr, []byte("goroutine ")) ||
		(r.Err != nil && strings.Contains(r.Err.Error(), "signal:"))
}
