package tfs

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// snapshot describes everything a mount shows, for comparisons.
func snapshot(t testing.TB, fs *FS) string {
	t.Helper()
	tree := walkTree(t, fs)
	paths := make([]string, 0, len(tree))
	for p := range tree {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var b strings.Builder
	for _, p := range paths {
		n := tree[p]
		a := fs.Getattr(n)
		fmt.Fprintf(&b, "%s kind=%d size=%d nlink=%d mtime=%d atime=%d", p, a.Kind, a.Size, a.Nlink, a.Mtime.UnixNano(), a.Atime.UnixNano())
		switch a.Kind {
		case KindFile:
			fmt.Fprintf(&b, " sha=%x", sha256.Sum256(readAll(t, fs, n)))
		case KindSymlink:
			s, _ := fs.Readlink(n)
			fmt.Fprintf(&b, " target=%q", s)
		}
		xs, _ := fs.ListXattr(n)
		for _, x := range xs {
			v, _ := fs.GetXattr(n, x)
			fmt.Fprintf(&b, " %s=%q", x, v)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// mk runs a node-making call and fails the test on error.
func mk(t testing.TB) func(*Node, error) *Node {
	return func(n *Node, err error) *Node {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
}

func newVolume(t testing.TB, size int64, label string) *blockdev.Memory {
	t.Helper()
	q := testQueue(t)
	dev := blockdev.NewMemory(q, size)
	must(t, format.Mkfs(dev, format.MkfsOptions{Label: label}))
	return dev
}

func pattern(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func writeAll(t testing.TB, fs *FS, n *Node, p []byte, off int64) {
	t.Helper()
	k, err := fs.Write(n, p, off)
	if err != nil || k != len(p) {
		t.Fatalf("write %d at %d: %d, %v", len(p), off, k, err)
	}
}

func checkContent(t testing.TB, fs *FS, path string, want []byte) {
	t.Helper()
	n, err := fs.Resolve(path)
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, fs, n)
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: %d bytes, want %d; first difference at %d", path, len(got), len(want), i)
	}
}

// workload runs every write operation and returns the expected content of
// the regular files it leaves.
func workload(t *testing.T, fs *FS) map[string][]byte {
	root := fs.Root()
	want := map[string][]byte{}
	d1 := mk(t)(fs.Mkdir(root, "d1"))
	d2 := mk(t)(fs.Mkdir(d1, "d2"))
	f := mk(t)(fs.Create(root, "small", true))
	writeAll(t, fs, f, []byte("hi\n"), 0)
	want["/small"] = []byte("hi\n")

	big := pattern(1, 5<<20+123)
	g := mk(t)(fs.Create(d2, "big", true))
	for off := 0; off < len(big); off += 100000 {
		writeAll(t, fs, g, big[off:min(off+100000, len(big))], int64(off))
	}
	copy(big[4096:], []byte("overwritten"))
	writeAll(t, fs, g, []byte("overwritten"), 4096)
	want["/d1/d2/big"] = big

	// Sparse: a hole, then data far out; then truncate down and up.
	s := mk(t)(fs.Create(root, "sparse", true))
	writeAll(t, fs, s, []byte("tail"), 3<<20)
	must(t, fs.Truncate(s, 3<<20+2))
	must(t, fs.Truncate(s, 4<<20))
	sw := make([]byte, 4<<20)
	copy(sw[3<<20:], "ta")
	want["/sparse"] = sw

	// Truncate shrink must not let old bytes come back.
	tr := mk(t)(fs.Create(root, "trunc", true))
	writeAll(t, fs, tr, pattern(2, 10000), 0)
	must(t, fs.Fsync(tr, false))
	must(t, fs.Truncate(tr, 1000))
	must(t, fs.Truncate(tr, 6000))
	tw := make([]byte, 6000)
	copy(tw, pattern(2, 1000))
	want["/trunc"] = tw

	// fallocate, then a partial write into the uninited extent, and a punch.
	fa := mk(t)(fs.Create(root, "falloc", true))
	must(t, fs.Fallocate(fa, 0, 0, 64<<10))
	writeAll(t, fs, fa, []byte("middle"), 20000)
	fw := make([]byte, 64<<10)
	copy(fw[20000:], "middle")
	pu := mk(t)(fs.Create(root, "punched", true))
	pw := pattern(3, 100000)
	writeAll(t, fs, pu, pw, 0)
	must(t, fs.Fsync(pu, false))
	must(t, fs.Fallocate(pu, FallocPunchHole|FallocKeepSize, 1000, 50000))
	clear(pw[1000:51000])
	want["/falloc"] = fw
	want["/punched"] = pw
	for _, mode := range []uint32{0x08, 0x20} { // COLLAPSE_RANGE, INSERT_RANGE
		if err := fs.Fallocate(pu, mode, 0, 4096); !errors.Is(err, syscall.EOPNOTSUPP) {
			t.Errorf("fallocate mode %#x: %v, want EOPNOTSUPP", mode, err)
		}
	}
	// Zero ranges: one inside (unaligned), one growing the file.
	zr := mk(t)(fs.Create(root, "zeroed", true))
	zw := pattern(4, 50000)
	writeAll(t, fs, zr, zw, 0)
	must(t, fs.Fallocate(zr, FallocZeroRange, 700, 30000))
	clear(zw[700:30700])
	must(t, fs.Fallocate(zr, FallocZeroRange, 49000, 5000))
	clear(zw[49000:])
	want["/zeroed"] = append(zw, make([]byte, 4000)...)

	// Symlinks, sockets, hard links, xattrs, times.
	mk(t)(fs.Symlink(root, "ln", "d1/d2/big"))
	mk(t)(fs.Mksock(d1, "sock"))
	must(t, fs.Link(f, d1, "small-link"))
	want["/d1/small-link"] = want["/small"]
	must(t, fs.SetXattr(f, "user.color", []byte("blue"), 0))
	must(t, fs.SetXattr(f, "user.gone", []byte("x"), 0))
	must(t, fs.RemoveXattr(f, "user.gone"))
	mt := time.Unix(1700000000, 123456789)
	must(t, fs.SetTimes(g, &mt, &mt))

	// Renames: plain, replacing, exchange, a directory.
	tmp := mk(t)(fs.Create(root, "tmp", true))
	writeAll(t, fs, tmp, []byte("tmp data"), 0)
	must(t, fs.Rename(root, "tmp", d1, "renamed", 0))
	want["/d1/renamed"] = []byte("tmp data")
	o := mk(t)(fs.Create(root, "victim", true))
	writeAll(t, fs, o, []byte("victim"), 0)
	must(t, fs.Rename(d1, "renamed", root, "victim", 0))
	want["/victim"] = want["/d1/renamed"]
	delete(want, "/d1/renamed")
	must(t, fs.Rename(root, "small", root, "trunc", RenameExchange))
	want["/small"], want["/trunc"] = want["/trunc"], want["/small"]
	mk(t)(fs.Mkdir(root, "emptydir"))
	must(t, fs.Rename(d1, "d2", root, "moved", 0))
	want["/moved/big"] = want["/d1/d2/big"]
	delete(want, "/d1/d2/big")
	must(t, fs.Rmdir(root, "emptydir"))
	dead := mk(t)(fs.Create(root, "dead", true))
	writeAll(t, fs, dead, pattern(4, 70000), 0)
	must(t, fs.Unlink(root, "dead"))
	return want
}

func TestRoundTrip(t *testing.T) {
	dev := newVolume(t, 64<<20, "roundtrip")
	q := testQueue(t)
	fs := mountMem(t, dev, Options{Queue: q})
	want := workload(t, fs)
	checkInvariants(t, fs)
	for p, w := range want {
		checkContent(t, fs, p, w)
	}
	before := snapshot(t, fs)
	must(t, fs.Sync()) // delayed allocation happens at write-back
	freeBefore := fs.StatFS().Free
	must(t, fs.Close())

	fs2 := mountMem(t, dev, Options{Queue: q})
	checkInvariants(t, fs2)
	after := snapshot(t, fs2)
	if before != after {
		t.Fatalf("tree changed across remount:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	for p, w := range want {
		checkContent(t, fs2, p, w)
	}
	// Free space: the same modulo the pre-reserved log areas, which are
	// in memory only (both mounts hold two).
	if f := fs2.StatFS().Free; f != freeBefore {
		t.Errorf("free blocks %d after remount, %d before", f, freeBefore)
	}
	rep, err := Fsck(dev, Options{})
	must(t, err)
	if !rep.Clean() {
		t.Errorf("fsck: %s", rep)
	}

	// Append in a new session starts with END_OF_SEGMENT where the old
	// END_OF_LOG was.
	w := fs2.w
	ext, pos := w.ext, w.used
	mk(t)(fs2.Mkdir(fs2.Root(), "x"))
	must(t, fs2.Sync())
	raw := dev.Bytes()
	if b := raw[int64(ext.Start)*format.BlockSize+int64(pos)]; b != format.RecEndOfSegment {
		t.Errorf("byte at the old end of log is %#x, want END_OF_SEGMENT", b)
	}
	before = snapshot(t, fs2)
	logBefore := fs2.LogBlocks()
	must(t, fs2.Compact())
	if after := snapshot(t, fs2); after != before {
		t.Fatalf("compaction changed the tree")
	}
	must(t, fs2.Close())
	fs3 := mountMem(t, dev, Options{Queue: q})
	if after := snapshot(t, fs3); after != before {
		t.Fatalf("tree after compaction and remount differs:\n%s\nvs\n%s", after, before)
	}
	if fs3.log.Records != 1 {
		t.Errorf("compacted log has %d records, want 1", fs3.log.Records)
	}
	_ = logBefore
	must(t, fs3.Close())
}
