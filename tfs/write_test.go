package tfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/format"
	"github.com/tfsmount/tfsmount/tfs/format/formattest"
)

// Mkfs must lay out blocks 0 and 1 exactly like Nanos' mkfs -e.
func TestMkfsMatchesNanos(t *testing.T) {
	data := loadImage(t, "empty")
	exp := loadExpected(t, "empty")
	u, _ := hex.DecodeString(strings.ReplaceAll(exp.UUID, "-", ""))
	var uuid [16]byte
	copy(uuid[:], u)
	q := testQueue(t)
	dev := blockdev.NewMemory(q, int64(len(data)))
	must(t, format.Mkfs(dev, format.MkfsOptions{Label: exp.Label, UUID: uuid}))
	if got := dev.Bytes()[:(1+format.ExtBlocks)*format.BlockSize]; !bytes.Equal(got, data[:len(got)]) {
		for i := range got {
			if got[i] != data[i] {
				t.Fatalf("mkfs differs from Nanos at byte %d: %#x vs %#x", i, got[i], data[i])
			}
		}
	}
	if err := format.Mkfs(dev, format.MkfsOptions{Label: strings.Repeat("x", 32)}); err == nil {
		t.Error("mkfs accepted a 32-byte label")
	}
	if err := format.Mkfs(blockdev.NewMemory(q, 100*format.BlockSize), format.MkfsOptions{}); err == nil {
		t.Error("mkfs accepted a device too small for the log")
	}
}

// The first file data of a fresh volume lands at block 3073, after the
// two pre-reserved log areas, as with Nanos' mkfs.
func TestFirstDataBlock(t *testing.T) {
	dev := newVolume(t, 4<<20, "")
	fs := mountMem(t, dev, Options{})
	f := mk(t)(fs.Create(fs.Root(), "hello", true))
	writeAll(t, fs, f, []byte("hi\n"), 0)
	must(t, fs.Close())
	fs = mountMem(t, dev, Options{ReadOnly: true})
	defer fs.Close()
	n := mk(t)(fs.Resolve("/hello"))
	if len(n.exts) != 1 || n.exts[0].dblock != 3073 || n.exts[0].length != 1 {
		t.Fatalf("extents %+v, want one at block 3073 of length 1", n.exts[0])
	}
	if !bytes.Equal(dev.Bytes()[3073*format.BlockSize:3073*format.BlockSize+4], []byte("hi\n\x00")) {
		t.Error("data block content")
	}
}

// Fixture images changed by this writer read back with the old content
// intact and the changes present, including a v4 log, which gets a v5
// extension appended.
func TestFixturesModified(t *testing.T) {
	skipUnderRace(t, "reads the large Nanos fixtures on one goroutine")
	for _, name := range []string{"tree", "fusemod", "v4-old-encoding", "partitioned", "many10k"} {
		t.Run(name, func(t *testing.T) {
			exp := loadExpected(t, name)
			q := testQueue(t)
			dev := blockdev.NewMemoryFrom(q, loadImage(t, name), false)
			fs := mountMem(t, dev, Options{Queue: q})
			d := mk(t)(fs.Mkdir(fs.Root(), "added"))
			f := mk(t)(fs.Create(d, "file", true))
			payload := pattern(9, 70000)
			writeAll(t, fs, f, payload, 0)
			must(t, fs.SetXattr(f, "user.k", []byte("v"), 0))
			must(t, fs.Close())

			fs = mountMem(t, dev, Options{Queue: q, ReadOnly: true})
			if name == "v4-old-encoding" {
				if v := fs.log.Exts[len(fs.log.Exts)-1].Version; v != 5 || len(fs.log.Exts) != 3 {
					t.Errorf("chain %+v: want a v5 extension appended", fs.log.Exts)
				}
			}
			// Every original entry except the root (one more entry now).
			// Times of the changed nodes are new: not compared (raw nil).
			entries := append([]expEntry(nil), exp.Entries...)
			now := &expTime{}
			entries[0].Entries = intp(*entries[0].Entries + 1)
			entries[0].Mtime, entries[0].Atime = now, now
			entries = append(entries, expEntry{Path: "/added", Type: "dir", Entries: intp(1), Mtime: now, Atime: now},
				expEntry{Path: "/added/file", Type: "file", Size: int64p(int64(len(payload))), SHA256: sha(payload), Mtime: now, Atime: now})
			checkEntries(t, fs, entries)
			rep, err := Fsck(dev, Options{})
			must(t, err)
			if !rep.Clean() {
				t.Errorf("fsck: %s", rep)
			}
			must(t, fs.Close())
		})
	}
}

func intp(i int) *int       { return &i }
func int64p(i int64) *int64 { return &i }
func sha(b []byte) string   { return fmt.Sprintf("%x", sha256.Sum256(b)) }

func TestFsckFixturesClean(t *testing.T) {
	skipUnderRace(t, "reads the large Nanos fixtures on one goroutine")
	for _, name := range fixtureNames(t) {
		q := testQueue(t)
		rep, err := Fsck(blockdev.NewMemoryFrom(q, loadImage(t, name), true), Options{})
		if err != nil || !rep.Clean() {
			t.Errorf("%s: %v %v", name, rep, err)
		}
	}
}

// Many operations grow the log past one extension; a remount replays it;
// many removals then trigger Nanos' compaction threshold (docs/format.md,
// "Compaction").
func TestLogGrowsAcrossExtensions(t *testing.T) {
	dev := newVolume(t, 32<<20, "grow")
	q := testQueue(t)
	fs := mountMem(t, dev, Options{Queue: q})
	d := mk(t)(fs.Mkdir(fs.Root(), "many"))
	name := func(i int) string { return fmt.Sprintf("file-with-a-longish-name-%05d", i) }
	for i := 0; i < 12000; i++ {
		mk(t)(fs.Create(d, name(i), true))
	}
	must(t, fs.Close())
	fs = mountMem(t, dev, Options{Queue: q})
	if len(fs.log.Exts) < 3 {
		t.Fatalf("log has %d extensions, want it to have grown", len(fs.log.Exts))
	}
	d = mk(t)(fs.Resolve("/many"))
	ents, err := fs.ReadDir(d)
	must(t, err)
	if len(ents) != 12000 {
		t.Fatalf("%d entries", len(ents))
	}
	// Compaction writes the whole tree as one value split across
	// extensions (TUPLE_EXTENDED in the next extension); it replays.
	must(t, fs.Compact())
	if fs.LogBlocks() < 1+2*format.ExtBlocks {
		t.Fatalf("compacted 12000-entry log fits in %d blocks; want a value spanning extensions", fs.LogBlocks())
	}
	must(t, fs.Close())
	fs = mountMem(t, dev, Options{Queue: q})
	if fs.log.Records != 1 {
		t.Fatalf("%d records after compaction, want 1", fs.log.Records)
	}
	d = mk(t)(fs.Resolve("/many"))
	if ents, _ := fs.ReadDir(d); len(ents) != 12000 {
		t.Fatalf("%d entries after compaction", len(ents))
	}
	before := fs.LogBlocks()
	for i := 1000; i < 12000; i++ {
		must(t, fs.Unlink(d, name(i)))
	}
	// Overwrites make entries obsolete one by one until the threshold
	// (at least 8192 obsolete, at most half of all entries live) is met.
	keep := mk(t)(fs.Resolve("/many/" + name(0)))
	for i := 0; i < 20000; i++ {
		must(t, fs.SetXattr(keep, "user.counter", []byte(fmt.Sprint(i)), 0))
	}
	must(t, fs.Sync())
	if after := fs.LogBlocks(); after >= before {
		t.Errorf("threshold compaction did not shrink the log: %d -> %d blocks", before, after)
	}
	must(t, fs.Close())
	fs = mountMem(t, dev, Options{Queue: q})
	defer fs.Close()
	if ents, _ := fs.ReadDir(mk(t)(fs.Resolve("/many"))); len(ents) != 1000 {
		t.Fatalf("%d entries after compaction", len(ents))
	}
	// The flusher may compact before the last overwrites (the threshold
	// is met early); either way far fewer records than were written.
	if fs.log.Records > 10000 {
		t.Errorf("%d records after compaction", fs.log.Records)
	}
}

// A log ending inside a value (dangling: docs/format.md, "Reading the log")
// is rebuilt at a writable mount before anything is appended.
func TestDanglingValueRebuilt(t *testing.T) {
	img := image(1024, 1024, formattest.Record(formattest.EmptyRoot), []byte{format.RecAvailable, 10, 2, 0x11, 0x03, format.RecEndOfLog})
	q := testQueue(t)
	dev := blockdev.NewMemoryFrom(q, img, false)
	rep, err := Fsck(dev, Options{})
	must(t, err)
	if rep.Clean() || !strings.Contains(rep.String(), "incomplete value") {
		t.Fatalf("fsck: %s", rep)
	}
	fs := mountMem(t, dev, Options{Queue: q})
	mk(t)(fs.Mkdir(fs.Root(), "after"))
	must(t, fs.Close())
	fs = mountMem(t, dev, Options{Queue: q})
	defer fs.Close()
	if fs.log.Dangling || fs.log.Exts[1].Start == 1 {
		t.Fatalf("log not rebuilt: dangling=%v chain %+v", fs.log.Dangling, fs.log.Exts)
	}
	mk(t)(fs.Resolve("/after"))
}

func TestNamespaceErrors(t *testing.T) {
	dev := newVolume(t, 8<<20, "")
	fs := mountMem(t, dev, Options{})
	defer fs.Close()
	r := fs.Root()
	d := mk(t)(fs.Mkdir(r, "d"))
	sub := mk(t)(fs.Mkdir(d, "sub"))
	f := mk(t)(fs.Create(r, "f", true))
	mk(t)(fs.Create(sub, "x", true))
	errIs := func(err error, want syscall.Errno, what string) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a\x00b", "\xff"} {
		_, err := fs.Create(r, bad, true)
		errIs(err, syscall.EINVAL, fmt.Sprintf("create %q", bad))
	}
	_, err := fs.Create(r, strings.Repeat("n", 256), true)
	errIs(err, syscall.ENAMETOOLONG, "long name")
	_, err = fs.Create(r, "f", true)
	errIs(err, syscall.EEXIST, "exclusive create")
	errIs(fs.Rmdir(r, "d"), syscall.ENOTEMPTY, "rmdir non-empty")
	errIs(fs.Unlink(r, "d"), syscall.EISDIR, "unlink dir")
	errIs(fs.Rmdir(r, "f"), syscall.ENOTDIR, "rmdir file")
	errIs(fs.Link(d, r, "dl"), syscall.EPERM, "link dir")
	errIs(fs.Rename(r, "d", sub, "inside", 0), syscall.EINVAL, "dir into itself")
	errIs(fs.Rename(r, "f", r, "d", 0), syscall.EISDIR, "file over dir")
	errIs(fs.Rename(d, "sub", r, "f", 0), syscall.ENOTDIR, "dir over file")
	mk(t)(fs.Mkdir(r, "full"))
	mk(t)(fs.Create(mk(t)(fs.Resolve("/full")), "y", true))
	errIs(fs.Rename(d, "sub", r, "full", 0), syscall.ENOTEMPTY, "dir over non-empty dir")
	errIs(fs.Rename(r, "f", r, "full", RenameNoReplace), syscall.EEXIST, "noreplace")
	errIs(fs.Rename(r, "f", r, "nothere", RenameExchange), syscall.ENOENT, "exchange with nothing")
	errIs(fs.Rename(r, "f", r, "g", RenameWhiteout), syscall.EINVAL, "whiteout")
	errIs(fs.SetXattr(f, "system.x", []byte("1"), 0), syscall.EOPNOTSUPP, "system xattr")
	errIs(fs.SetXattr(f, "nonamespace", []byte("1"), 0), syscall.EOPNOTSUPP, "xattr without a namespace")
	_, err = fs.GetXattr(f, "user.none")
	errIs(err, syscall.ENODATA, "absent xattr")
	errIs(fs.Fallocate(f, FallocPunchHole, 0, 1), syscall.EOPNOTSUPP, "punch without keep-size")
	// An unlinked open file keeps its data until release.
	writeAll(t, fs, f, pattern(5, 9000), 0)
	fs.Open(f)
	freeOpen := fs.StatFS().Free
	must(t, fs.Unlink(r, "f"))
	if got := readAll(t, fs, f); !bytes.Equal(got, pattern(5, 9000)) {
		t.Error("unlinked open file lost its data")
	}
	fs.Release(f)
	if fs.StatFS().Free <= freeOpen-1 && fs.StatFS().Free < freeOpen {
		t.Errorf("blocks not freed at release: %d vs %d", fs.StatFS().Free, freeOpen)
	}
	if a := fs.Getattr(f); a.Nlink != 0 {
		t.Errorf("nlink of an unlinked file %d", a.Nlink)
	}
	ro := mountMem(t, dev, Options{ReadOnly: true})
	defer ro.Close()
	_, err = ro.Mkdir(ro.Root(), "z")
	errIs(err, syscall.EROFS, "mkdir on read-only mount")
}

func TestSeekAndEnospc(t *testing.T) {
	dev := newVolume(t, 4<<20, "")
	fs := mountMem(t, dev, Options{})
	defer fs.Close()
	f := mk(t)(fs.Create(fs.Root(), "s", true))
	writeAll(t, fs, f, []byte("data"), 1<<20)
	must(t, fs.Fallocate(f, FallocKeepSize, 0, 4096))
	if off, err := fs.Seek(f, 0, seekData); err != nil || off != 1<<20 {
		t.Errorf("SEEK_DATA: %d %v", off, err)
	}
	if off, err := fs.Seek(f, 1<<20, seekHole); err != nil || off != 1<<20+4 {
		t.Errorf("SEEK_HOLE: %d %v", off, err)
	}
	// 4 MiB volume: 1025 log blocks, 2048 pre-reserved: about 5000 free.
	g := mk(t)(fs.Create(fs.Root(), "big", true))
	_, err := fs.Write(g, make([]byte, 4<<20), 0)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("oversized write: %v, want ENOSPC", err)
	}
}

// Writing into part of an uninitialised extent must not expose what its
// blocks held before, also for a file that is unlinked but open.
func TestUninitedNoStaleData(t *testing.T) {
	for _, unlinked := range []bool{false, true} {
		dev := newVolume(t, 16<<20, "")
		fs := mountMem(t, dev, Options{})
		r := fs.Root()
		a := mk(t)(fs.Create(r, "a", true))
		writeAll(t, fs, a, bytes.Repeat([]byte{0xAA}, 256<<10), 0)
		must(t, fs.Sync())
		must(t, fs.Unlink(r, "a"))
		b := mk(t)(fs.Create(r, "b", true))
		fs.Open(b)
		must(t, fs.Fallocate(b, FallocKeepSize, 0, 256<<10))
		if unlinked {
			must(t, fs.Unlink(r, "b"))
		}
		writeAll(t, fs, b, []byte("x"), 100000)
		must(t, fs.Fsync(b, false))
		must(t, fs.Truncate(b, 256<<10))
		got := readAll(t, fs, b)
		want := make([]byte, 256<<10)
		want[100000] = 'x'
		if !bytes.Equal(got, want) {
			i := bytes.IndexByte(got, 0xAA)
			t.Errorf("unlinked=%v: stale byte at %d", unlinked, i)
		}
		fs.Release(b)
		must(t, fs.Close())
		if !unlinked {
			fs = mountMem(t, dev, Options{ReadOnly: true})
			if got := readAll(t, fs, mk(t)(fs.Resolve("/b"))); !bytes.Equal(got, want) {
				t.Errorf("after remount: stale byte at %d", bytes.IndexByte(got, 0xAA))
			}
			must(t, fs.Close())
		}
	}
}

// Blocks of a deleted file are discarded once the deletion is durable.
func TestDiscardAfterDelete(t *testing.T) {
	dev := newVolume(t, 16<<20, "")
	fs := mountMem(t, dev, Options{WritebackDelay: time.Hour}) // no timer flush in between
	defer fs.Close()
	f := mk(t)(fs.Create(fs.Root(), "f", true))
	writeAll(t, fs, f, bytes.Repeat([]byte{0x55}, 100000), 0)
	must(t, fs.Sync())
	start := int64(f.exts[0].dblock) * format.BlockSize
	if dev.Bytes()[start] != 0x55 {
		t.Fatal("data not on the device")
	}
	must(t, fs.Unlink(fs.Root(), "f"))
	if dev.Bytes()[start] != 0x55 {
		t.Fatal("discarded before the deletion was written")
	}
	must(t, fs.Sync())
	if b := dev.Bytes()[start : start+100000]; !bytes.Equal(b, make([]byte, 100000)) {
		t.Fatal("blocks of the deleted file were not discarded")
	}
}

// A log that wrote a name immediately twice is rebuilt before appending
// (docs/format.md, "The dictionary"): Nanos' writer state would collide
// indices.
func TestDuplicateNamesRebuilt(t *testing.T) {
	dup := []byte{0x11, 0x03, 0x81, 'x', 0x91, 0x88, 0x08}
	dup = append(dup, "children"...)
	dup = append(dup, 0x90)
	img := image(1024, 1024, formattest.Record(formattest.EmptyRoot), formattest.Record(dup), []byte{format.RecEndOfLog})
	q := testQueue(t)
	dev := blockdev.NewMemoryFrom(q, img, false)
	rep, err := Fsck(dev, Options{})
	must(t, err)
	if !strings.Contains(rep.String(), "more than once") {
		t.Fatalf("fsck: %s", rep)
	}
	fs := mountMem(t, dev, Options{Queue: q})
	mk(t)(fs.Mkdir(mk(t)(fs.Resolve("/x")), "y"))
	must(t, fs.Close())
	fs = mountMem(t, dev, Options{Queue: q})
	defer fs.Close()
	if fs.log.Dec.DupNames {
		t.Error("log still has duplicate names")
	}
	if n := mk(t)(fs.Resolve("/x/y")); n.kind != KindDir {
		t.Error("/x/y is not a directory")
	}
}

// Extents written by this package follow Nanos' cap of 65536 blocks, and a
// file written in order gets the fewest extents the cap allows, also when
// background write-back (every millisecond here) commits it in pieces
// while it is being written: a pending piece that grows a logged extent
// counts that extent against the cap.
func TestExtentCap(t *testing.T) {
	dev := newVolume(t, 96<<20, "")
	fs := mountMem(t, dev, Options{WritebackDelay: time.Millisecond})
	f := mk(t)(fs.Create(fs.Root(), "big", true))
	data := pattern(7, 70<<20)
	for off := 0; off < len(data); off += 1 << 20 {
		writeAll(t, fs, f, data[off:off+1<<20], int64(off))
	}
	must(t, fs.Close())
	fs = mountMem(t, dev, Options{ReadOnly: true})
	defer fs.Close()
	n := mk(t)(fs.Resolve("/big"))
	var total uint64
	for _, e := range n.exts {
		if e.length > maxExtentBlocks || e.length != e.allocated {
			t.Errorf("extent at %d: length %d allocated %d", e.fblock, e.length, e.allocated)
		}
		total += e.length
	}
	if len(n.exts) != 3 || total != 70<<20/format.BlockSize {
		for _, e := range n.exts {
			t.Logf("extent file block %d: dblock %d length %d", e.fblock, e.dblock, e.length)
		}
		t.Errorf("%d extents covering %d blocks, want 3 covering %d", len(n.exts), total, 70<<20/format.BlockSize)
	}
	checkContent(t, fs, "/big", data)
}

// A write-back of several runs prepares them all before it commits any:
// a new extent placed right after one already at the cap is still pending
// when the next run is prepared, and must grow in place, not count the full
// extent against the cap and start a third (CI saw that order, timing
// dependent, in TestExtentCap).
func TestExtentCapPendingAfterFullExtent(t *testing.T) {
	dev := newVolume(t, 96<<20, "")
	fs := mountMem(t, dev, Options{WritebackDelay: time.Hour})
	f := mk(t)(fs.Create(fs.Root(), "f", true))
	const mib = 1 << 20
	writeAll(t, fs, f, pattern(1, 32*mib), 0)
	must(t, fs.Fsync(f, false))
	b := backing{fs, f}
	runs := [][2]int64{{32 * mib, mib}, {33 * mib, 40 * mib}}
	for _, r := range runs {
		if _, err := b.PrepareWrite(r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	// The data, as the write-back would write it before committing.
	data := pattern(2, 41*mib)
	fs.mu.Lock()
	for _, e := range f.exts {
		if e.fblock >= 32*mib/format.BlockSize {
			off := int64(e.fblock-32*mib/format.BlockSize) * format.BlockSize
			must(t, blockdev.WriteAt(fs.dev, data[off:off+int64(e.length)*format.BlockSize], int64(e.dblock)*format.BlockSize))
		}
	}
	fs.mu.Unlock()
	for _, r := range runs {
		b.CommitWrite(r[0], r[1], nil)
	}
	fs.mu.Lock()
	var lens []uint64
	for _, e := range f.exts {
		lens = append(lens, e.length)
	}
	fs.mu.Unlock()
	if len(lens) != 3 || lens[0] != maxExtentBlocks || lens[1] != maxExtentBlocks {
		t.Fatalf("extents of %v blocks, want two of %d and the rest", lens, maxExtentBlocks)
	}
	must(t, fs.Truncate(f, 73*mib))
	must(t, fs.Fsync(f, false))
	checkContent(t, fs, "/f", append(pattern(1, 32*mib), data...))
}

// fsync makes the file's bytes and metadata durable: an image captured
// right after it (a power cut) holds them.
func TestFsyncDurable(t *testing.T) {
	dev := newVolume(t, 16<<20, "")
	q := testQueue(t)
	fs := mountMem(t, dev, Options{Queue: q, WritebackDelay: time.Hour})
	defer fs.Close()
	d := mk(t)(fs.Mkdir(fs.Root(), "d"))
	f := mk(t)(fs.Create(d, "f", true))
	data := pattern(11, 300000)
	writeAll(t, fs, f, data, 0)
	must(t, fs.Fsync(f, false))
	crash := mountMem(t, blockdev.NewMemoryFrom(q, dev.Bytes(), true), Options{Queue: q})
	defer crash.Close()
	checkContent(t, crash, "/d/f", data)
}

// fdatasync logs a changed size and new extents, but after an overwrite
// in place (only times changed) it writes no log record; fsync logs the
// times. Both leave the data durable.
func TestFdatasyncSkipsTimes(t *testing.T) {
	dev := newVolume(t, 16<<20, "")
	q := testQueue(t)
	fs := mountMem(t, dev, Options{Queue: q, WritebackDelay: time.Hour})
	defer fs.Close()
	f := mk(t)(fs.Create(fs.Root(), "f", true))
	data := pattern(12, 100000)
	writeAll(t, fs, f, data, 0)
	must(t, fs.Fsync(f, true)) // new extents and size: logged
	crashCheck := func() {     // the image as a crash now would leave it
		t.Helper()
		crash := mountMem(t, blockdev.NewMemoryFrom(q, dev.Bytes(), true), Options{Queue: q, ReadOnly: true})
		defer crash.Close()
		checkContent(t, crash, "/f", data)
	}
	crashCheck()
	logArea := func() []byte {
		return append([]byte(nil), dev.Bytes()[format.BlockSize:(1+format.ExtBlocks)*format.BlockSize]...)
	}

	before := logArea()
	copy(data[5000:], pattern(13, 20000))
	time.Sleep(10 * time.Millisecond) // the mtime of the overwrite differs
	writeAll(t, fs, f, data[5000:25000], 5000)
	must(t, fs.Fsync(f, true))
	if !bytes.Equal(before, logArea()) {
		t.Error("fdatasync after an overwrite in place wrote to the log")
	}
	crashCheck()

	writeAll(t, fs, f, data[:10], 0)
	must(t, fs.Fsync(f, false))
	if bytes.Equal(before, logArea()) {
		t.Error("fsync after an overwrite did not log the new mtime")
	}
	crashCheck()
}

// Device errors reach the caller of Sync/Fsync; nothing panics and the
// volume on the device stays mountable.
func TestLogWriteErrorReported(t *testing.T) {
	dev := newVolume(t, 16<<20, "")
	q := testQueue(t)
	faulty := blockdev.NewFaulty(dev, q)
	fs := mountMem(t, faulty, Options{Queue: q, WritebackDelay: time.Hour})
	mk(t)(fs.Mkdir(fs.Root(), "d"))
	faulty.FailRange(format.BlockSize, format.ExtBlocks*format.BlockSize, errors.New("injected"), blockdev.OpWrite)
	if err := fs.Sync(); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("sync: %v, want the injected error", err)
	}
	faulty.ClearFaults()
	must(t, fs.Sync()) // staged records are written again
	must(t, fs.Close())
	rep, err := Fsck(dev, Options{})
	must(t, err)
	if !rep.Clean() || rep.Dirs != 2 {
		t.Fatalf("fsck after a failed then retried log write: %s", rep)
	}
}

// Nanos' allocation policy on a fragmented volume: requests halve from
// min(gap, 65536) down to 2048 blocks, then ENOSPC.
func TestAllocHalving(t *testing.T) {
	dev := newVolume(t, 64<<20, "")
	fs := mountMem(t, dev, Options{})
	defer fs.Close()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	// Leave free runs of 3000 blocks separated by used blocks, and a few
	// runs too small for any extent.
	var holes [][2]uint64
	fs.free.Runs(func(s, n uint64) bool { holes = append(holes, [2]uint64{s, n}); return true })
	for _, h := range holes {
		for b := h[0]; b < h[0]+h[1]; b += 3001 {
			if b+3000 < h[0]+h[1] {
				must(t, fs.free.Reserve(b+3000, 1))
			}
		}
	}
	n := &Node{kind: KindFile} // no directory entry: nothing is logged
	must(t, fs.allocGap(n, 0, 10000, true))
	// 10000 → 5000 → 2500 fits a 3000-block run; the rest of the gap
	// (7500) → 3750 → 1875, and so on: never below 1024 (halving stops
	// once a request is at most 2048), never more than a run.
	var total uint64
	for _, e := range n.exts {
		if e.length <= 1024 || e.length > 3000 {
			t.Errorf("extent of %d blocks", e.length)
		}
		total += e.length
	}
	if total != 10000 || n.exts[0].length != 2500 || n.exts[1].length != 1875 {
		t.Errorf("extents cover %d blocks, first two %d and %d; want 10000, 2500, 1875", total, n.exts[0].length, n.exts[1].length)
	}
	// Only runs below 2048 blocks left: ENOSPC.
	for {
		if _, ok := fs.free.Alloc(2048); !ok {
			break
		}
	}
	m := &Node{kind: KindFile}
	if err := fs.allocGap(m, 0, 5000, false); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("allocation with only small runs: %v, want ENOSPC", err)
	}
}

// Space held by a file unlinked while open comes back at its last
// Release. A write that runs out of space while such a release is pending
// (the kernel sends RELEASE after close(2) returns) waits for it instead
// of failing; with nothing unlinked and open, ENOSPC comes at once.
func TestWriteWaitsForUnlinkedOpenFile(t *testing.T) {
	dev := newVolume(t, 16<<20, "")
	fs := mountMem(t, dev, Options{})
	defer fs.Close()
	free := fs.StatFS().Free * format.BlockSize
	old := mk(t)(fs.Create(fs.Root(), "old", true))
	fs.Open(old)
	writeAll(t, fs, old, pattern(1, int(free*3/4)), 0)
	must(t, fs.Sync())
	must(t, fs.Unlink(fs.Root(), "old"))

	released := make(chan struct{})
	go func() {
		time.Sleep(20 * time.Millisecond)
		fs.Release(old)
		close(released)
	}()
	data := pattern(2, int(free/2))
	nf := mk(t)(fs.Create(fs.Root(), "new", true))
	writeAll(t, fs, nf, data, 0) // needs the old file's space
	<-released
	must(t, fs.Sync())
	checkContent(t, fs, "/new", data)

	// Nothing unlinked is open: ENOSPC without waiting for anything.
	g := mk(t)(fs.Create(fs.Root(), "big", true))
	if _, err := fs.Write(g, make([]byte, free), 0); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("oversized write: %v, want ENOSPC", err)
	}
}
