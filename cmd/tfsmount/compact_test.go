package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// compact shrinks a log grown by many changes, reports both sizes, and
// leaves the tree as it was.
func TestCompactImage(t *testing.T) {
	img := filepath.Join(t.TempDir(), "vol.img")
	if code := runMkfs([]string{"--size", "32M", img}); code != exitOK {
		t.Fatalf("mkfs: exit %d", code)
	}
	v, err := openVolume(img, "", false)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("n", 200)
	for i := range 4000 {
		name := fmt.Sprintf("%s%05d", long, i)
		if _, err := v.fs.Create(v.fs.Root(), name, true); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			if err := v.fs.Unlink(v.fs.Root(), name); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}

	var out strings.Builder
	if err := compactImage(&out, img, ""); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`log (\d+) blocks \(.*\) before, (\d+) blocks \(.*\) after`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("unexpected report %q", out.String())
	}
	before, _ := strconv.Atoi(m[1])
	after, _ := strconv.Atoi(m[2])
	t.Logf("%s", out.String())
	if after >= before {
		t.Errorf("log %d blocks before, %d after: compaction saved nothing", before, after)
	}

	v, err = openVolume(img, "", true)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ents, err := v.fs.ReadDir(v.fs.Root())
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2000 {
		t.Errorf("%d entries after compaction, want 2000", len(ents))
	}
	if got := v.fs.LogBlocks(); got != uint64(after) {
		t.Errorf("remounted log has %d blocks, report said %d", got, after)
	}
	if code := runCompact([]string{img, "extra"}); code != exitUsage {
		t.Errorf("compact with two operands: exit %d, want %d", code, exitUsage)
	}
}
