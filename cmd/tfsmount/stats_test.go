package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/heap"
	"github.com/tfsmount/tfsmount/tfs"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// The stats output carries the page cache's counters from tfs.
func TestStatsShowCacheCounters(t *testing.T) {
	q := bh.NewQueue(2)
	t.Cleanup(q.Close)
	dev := blockdev.NewMemory(q, 32<<20)
	if err := format.Mkfs(dev, format.MkfsOptions{}); err != nil {
		t.Fatal(err)
	}
	pool := heap.NewPagePool(heap.PoolConfig{Budget: 8 << 20})
	fsys, err := tfs.Mount(dev, tfs.Options{Queue: q, Pool: pool, CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	f, err := fsys.Create(fsys.Root(), "f", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.Write(f, make([]byte, 40960), 0); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Fsync(f, false); err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.Read(f, make([]byte, 40960), 0); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	writeStats(&out, &mountState{q: q, pool: pool, dev: dev, fsys: fsys})
	m := regexp.MustCompile(`page cache: (\d+) hits, .* write-backs \((\d+) pages\)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no page cache line in:\n%s", out.String())
	}
	hits, _ := strconv.Atoi(m[1])
	pages, _ := strconv.Atoi(m[2])
	if hits < 10 || pages < 10 {
		t.Errorf("page cache line shows %d hits and %d pages written back, want 10 or more each:\n%s", hits, pages, out.String())
	}
}
