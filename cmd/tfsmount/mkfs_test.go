package main

import (
	"os"
	"path/filepath"
	"testing"
)

// mkfs takes the size as --size or after IMAGE, refuses both at once,
// and the volume made fills the file.
func TestMkfsSizeForms(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		size int64
	}{
		{[]string{"--size", "3M", "flag.img"}, 3 << 20},
		{[]string{"pos.img", "5M"}, 5 << 20},
		{[]string{"--label", "x", "pos2.img", "4194304"}, 4 << 20},
	} {
		args := append([]string(nil), c.args...)
		for i, a := range args {
			if filepath.Ext(a) == ".img" {
				args[i] = filepath.Join(dir, a)
			}
		}
		if code := runMkfs(args); code != exitOK {
			t.Errorf("mkfs %v: exit %d", c.args, code)
			continue
		}
		img := args[len(args)-1]
		if filepath.Ext(img) != ".img" {
			img = args[len(args)-2]
		}
		st, err := os.Stat(img)
		if err != nil || st.Size() != c.size {
			t.Errorf("mkfs %v: image %v size %d, want %d", c.args, err, st.Size(), c.size)
			continue
		}
		v, err := openVolume(img, "", true)
		if err != nil {
			t.Errorf("mkfs %v: %v", c.args, err)
			continue
		}
		if blocks := v.fs.StatFS().Blocks; blocks != uint64(c.size/512) {
			t.Errorf("mkfs %v: volume of %d blocks, want %d", c.args, blocks, c.size/512)
		}
		v.Close()
	}
	for _, bad := range [][]string{
		{"--size", "3M", filepath.Join(dir, "both.img"), "3M"},
		{filepath.Join(dir, "tiny.img"), "1K"},
		{filepath.Join(dir, "junk.img"), "lots"},
		{filepath.Join(dir, "three.img"), "3M", "extra"},
	} {
		if code := runMkfs(bad); code != exitUsage {
			t.Errorf("mkfs %v: exit %d, want %d", bad, code, exitUsage)
		}
	}
	for _, name := range []string{"both.img", "tiny.img", "junk.img", "three.img"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("a refused mkfs created %s", name)
		}
	}
}
