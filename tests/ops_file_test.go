package tests

import (
	"bytes"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// freshMount makes an empty image of the given size and mounts it read-write.
func freshMount(t *testing.T, size string, opts ...string) *mount {
	t.Helper()
	return mountImage(t, newImage(t, size), append([]string{"rw"}, opts...)...)
}

func mustWriteFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatalf("write %s: %v", p, err)
	}
}

func mustReadFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return b
}

func wantContent(t *testing.T, p string, want []byte) {
	t.Helper()
	got := mustReadFile(t, p)
	if !bytes.Equal(got, want) {
		t.Errorf("%s: content differs: got %d bytes, want %d (first difference at %d)", p, len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(a, b []byte) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

func randBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func TestCreateExclTruncAppend(t *testing.T) {
	m := freshMount(t, "64M")
	p := m.Path("f")
	fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
	if err != nil {
		t.Fatalf("O_CREAT|O_EXCL on a new name: %v", err)
	}
	if _, err := unix.Write(fd, []byte("hello world")); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	_, err = unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
	wantErrno(t, "O_CREAT|O_EXCL on an existing file", err, unix.EEXIST)
	if err := os.Mkdir(m.Path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = unix.Open(m.Path("d"), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
	wantErrno(t, "O_CREAT|O_EXCL on a directory", err, unix.EEXIST)
	_, err = unix.Open(m.Path("d"), unix.O_WRONLY, 0)
	wantErrno(t, "open a directory for writing", err, unix.EISDIR)
	_, err = unix.Open(m.Path("missing"), unix.O_RDONLY, 0)
	wantErrno(t, "open a missing file", err, unix.ENOENT)
	_, err = unix.Open(m.Path("f", "x"), unix.O_RDONLY, 0)
	wantErrno(t, "a file used as a directory", err, unix.ENOTDIR)

	// O_APPEND writes go to the end whatever the file offset.
	fd, err = unix.Open(p, unix.O_WRONLY|unix.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Seek(fd, 0, 0)
	if _, err := unix.Write(fd, []byte("!!")); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	wantContent(t, p, []byte("hello world!!"))

	// O_TRUNC empties the file.
	fd, err = unix.Open(p, unix.O_WRONLY|unix.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	unix.Fstat(fd, &st)
	if st.Size != 0 {
		t.Errorf("size after O_TRUNC: %d", st.Size)
	}
	unix.Write(fd, []byte("new"))
	unix.Close(fd)
	wantContent(t, p, []byte("new"))

	m = m.remount()
	wantContent(t, m.Path("f"), []byte("new"))
	m.finish()
}

func TestReadWriteOffsetsAndHoles(t *testing.T) {
	m := freshMount(t, "64M")
	p := m.Path("sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 3<<20+123)
	pieces := []struct {
		off  int64
		size int
	}{{0, 100}, {4095, 2}, {70000, 5000}, {1 << 20, 4096}, {3 << 20, 123}, {2<<20 + 511, 513}}
	for i, pc := range pieces {
		data := randBytes(int64(i), pc.size)
		if _, err := f.WriteAt(data, pc.off); err != nil {
			t.Fatalf("pwrite %d at %d: %v", pc.size, pc.off, err)
		}
		copy(want[pc.off:], data)
	}
	// Unaligned reads across piece and hole boundaries.
	for _, r := range []struct{ off, n int64 }{{0, 8192}, {4090, 20}, {69999, 5010}, {1<<20 - 7, 4200}, {3 << 20, 200}, {100, 1 << 20}} {
		buf := make([]byte, r.n)
		n, err := f.ReadAt(buf, r.off)
		end := min(r.off+r.n, int64(len(want)))
		if int64(n) != end-r.off {
			t.Errorf("pread %d at %d: %d bytes, err %v", r.n, r.off, n, err)
			continue
		}
		if !bytes.Equal(buf[:n], want[r.off:end]) {
			t.Errorf("pread %d at %d: wrong data (first difference at %d)", r.n, r.off, firstDiff(buf[:n], want[r.off:end]))
		}
	}
	// A read at or past EOF returns 0 bytes.
	if n, _ := f.ReadAt(make([]byte, 10), int64(len(want))+10); n != 0 {
		t.Errorf("read past EOF returned %d bytes", n)
	}
	f.Close()
	var st unix.Stat_t
	unix.Stat(p, &st)
	if st.Size != int64(len(want)) {
		t.Errorf("size %d, want %d", st.Size, len(want))
	}
	if st.Blocks*512 >= int64(len(want)) {
		t.Errorf("a sparse file of %d bytes has %d blocks allocated: holes were filled", len(want), st.Blocks)
	}
	wantContent(t, p, want)
	m = m.remount()
	wantContent(t, m.Path("sparse"), want)
	m.finish()
}

func TestTruncate(t *testing.T) {
	m := freshMount(t, "64M")
	p := m.Path("t")
	mustWriteFile(t, p, bytes.Repeat([]byte{0xAA}, 3*4096+100))
	// Shrink into the middle of a page, then grow: the bytes past the cut
	// must read as zeros, not as the old 0xAA.
	if err := os.Truncate(p, 100); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 3*4096+100); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 3*4096+100)
	for i := 0; i < 100; i++ {
		want[i] = 0xAA
	}
	wantContent(t, p, want)
	// ftruncate on an open fd, growing far past the end.
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(10 << 20); err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("tail"), 10<<20-4)
	f.Close()
	want = append(want, make([]byte, 10<<20-len(want))...)
	copy(want[10<<20-4:], "tail")
	wantContent(t, p, want)
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 5000); err != nil {
		t.Fatal(err)
	}
	wantContent(t, p, make([]byte, 5000))
	err = os.Truncate(m.Path("nope"), 10)
	wantErrno(t, "truncate a missing file", err, unix.ENOENT)
	m = m.remount()
	wantContent(t, m.Path("t"), make([]byte, 5000))
	m.finish()
}

func TestFallocate(t *testing.T) {
	m := freshMount(t, "64M")
	p := m.Path("fa")
	data := randBytes(7, 64<<10)
	mustWriteFile(t, p, data)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	// Keep-size preallocation past EOF leaves the size alone.
	if err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 64<<10, 1<<20); err != nil {
		t.Errorf("fallocate KEEP_SIZE: %v", err)
	}
	var st unix.Stat_t
	unix.Fstat(fd, &st)
	if st.Size != 64<<10 {
		t.Errorf("size after KEEP_SIZE fallocate: %d", st.Size)
	}
	// Punching a hole zeroes the range and keeps the size.
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 8192, 16384); err != nil {
		t.Errorf("fallocate PUNCH_HOLE: %v", err)
	}
	want := append([]byte(nil), data...)
	clear(want[8192 : 8192+16384])
	// An unaligned punch zeroes exactly its bytes.
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 40000, 1000); err != nil {
		t.Errorf("fallocate PUNCH_HOLE unaligned: %v", err)
	}
	clear(want[40000:41000])
	wantContent(t, p, want)
	unix.Fstat(fd, &st)
	if st.Size != 64<<10 {
		t.Errorf("size after punch: %d", st.Size)
	}
	// Plain mode 0 allocates and extends the size.
	if err := unix.Fallocate(fd, 0, 64<<10, 4096); err != nil {
		t.Errorf("fallocate mode 0: %v", err)
	} else {
		unix.Fstat(fd, &st)
		if st.Size != 64<<10+4096 {
			t.Errorf("size after fallocate mode 0: %d, want %d", st.Size, 64<<10+4096)
		}
		want = append(want, make([]byte, 4096)...)
	}
	// ZERO_RANGE zeroes exactly its bytes; without KEEP_SIZE it may extend
	// the file, with KEEP_SIZE it never does.
	if err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, 1000, 30000); err != nil {
		t.Errorf("fallocate ZERO_RANGE: %v", err)
	} else {
		clear(want[1000:31000])
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, int64(len(want))-100, 5000); err != nil {
		t.Errorf("fallocate ZERO_RANGE|KEEP_SIZE across EOF: %v", err)
	} else {
		clear(want[len(want)-100:])
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, int64(len(want))-10, 110); err != nil {
		t.Errorf("fallocate ZERO_RANGE extending the file: %v", err)
	} else {
		want = append(want[:len(want)-10], make([]byte, 110)...)
	}
	unix.Fstat(fd, &st)
	if st.Size != int64(len(want)) {
		t.Errorf("size after ZERO_RANGE: %d, want %d", st.Size, len(want))
	}
	for _, mode := range []struct {
		name string
		m    uint32
	}{{"COLLAPSE_RANGE", unix.FALLOC_FL_COLLAPSE_RANGE},
		{"INSERT_RANGE", unix.FALLOC_FL_INSERT_RANGE}, {"UNSHARE_RANGE", unix.FALLOC_FL_UNSHARE_RANGE}} {
		err := unix.Fallocate(fd, mode.m, 0, 4096)
		wantErrno(t, "fallocate "+mode.name, err, unix.EOPNOTSUPP)
	}
	f.Close()
	wantContent(t, p, want)
	m = m.remount()
	wantContent(t, m.Path("fa"), want)
	m.finish()
}

func TestSeekDataHole(t *testing.T) {
	if strings.Contains(os.Getenv("TFS_E2E_MOUNT_OPTS"), "writeback_cache") {
		t.Skip("with writeback_cache the kernel answers seeks and reports no holes (TestSeekSeesUnsyncedData)")
	}
	m := freshMount(t, "64M")
	p := m.Path("s")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteAt(bytes.Repeat([]byte{1}, 4096), 0)
	f.WriteAt(bytes.Repeat([]byte{2}, 4096), 1<<20)
	f.Truncate(2 << 20)
	f.Sync()
	fd := int(f.Fd())
	hole, err := unix.Seek(fd, 0, unix.SEEK_HOLE)
	if err != nil || hole < 4096 || hole >= 1<<20 {
		t.Errorf("SEEK_HOLE from 0 = %d, %v; want in [4096, 1MiB)", hole, err)
	}
	data, err := unix.Seek(fd, 4096, unix.SEEK_DATA)
	if err != nil || data < hole || data > 1<<20 {
		t.Errorf("SEEK_DATA from 4096 = %d, %v; want in [%d, 1MiB]", data, err, hole)
	}
	hole2, err := unix.Seek(fd, 1<<20, unix.SEEK_HOLE)
	if err != nil || hole2 < 1<<20+4096 || hole2 > 2<<20 {
		t.Errorf("SEEK_HOLE from 1MiB = %d, %v; want in [1MiB+4096, 2MiB]", hole2, err)
	}
	_, err = unix.Seek(fd, 1<<20+8192, unix.SEEK_DATA)
	if hole2 < 1<<20+8192 {
		wantErrno(t, "SEEK_DATA in the trailing hole", err, unix.ENXIO)
	}
	_, err = unix.Seek(fd, 3<<20, unix.SEEK_DATA)
	wantErrno(t, "SEEK_DATA past EOF", err, unix.ENXIO)
	f.Close()
	m.finish()
}

// Data written and not yet synced counts as data for SEEK_DATA and
// SEEK_HOLE, also with the kernel's writeback cache, where it may still be
// only in the kernel (the kernel asks the daemon without writing it back
// first; that mount leaves seeking to the kernel, which reports no holes).
func TestSeekSeesUnsyncedData(t *testing.T) {
	for _, opts := range [][]string{nil, {"writeback_cache"}} {
		t.Run(strings.Join(append([]string{"rw"}, opts...), ","), func(t *testing.T) {
			m := freshMount(t, "64M", opts...)
			f, err := os.Create(m.Path("s"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(1 << 20); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte{7}, 512<<10); err != nil {
				t.Fatal(err)
			}
			fd := int(f.Fd())
			data, err := unix.Seek(fd, 0, unix.SEEK_DATA)
			if err != nil || data > 512<<10 {
				t.Errorf("SEEK_DATA from 0 = %d, %v; want at most %d", data, err, 512<<10)
			}
			hole, err := unix.Seek(fd, 512<<10, unix.SEEK_HOLE)
			if err != nil || hole <= 512<<10 {
				t.Errorf("SEEK_HOLE from %d = %d, %v; want past it", 512<<10, hole, err)
			}
			f.Close()
			m.finish()
		})
	}
}

func TestStatfsFreeSpace(t *testing.T) {
	m := freshMount(t, "64M")
	var before, after unix.Statfs_t
	if err := unix.Statfs(m.Dir, &before); err != nil {
		t.Fatal(err)
	}
	if before.Blocks == 0 || before.Bfree == 0 || before.Bfree > before.Blocks {
		t.Fatalf("statfs of an empty 64M volume: blocks %d free %d", before.Blocks, before.Bfree)
	}
	if total := before.Blocks * uint64(before.Bsize); total < 60<<20 || total > 64<<20 {
		t.Errorf("statfs size %d bytes for a 64 MiB image", total)
	}
	if before.Namelen != 255 {
		t.Errorf("statfs namelen %d, want 255", before.Namelen)
	}
	f, err := os.Create(m.Path("big"))
	if err != nil {
		t.Fatal(err)
	}
	f.Write(randBytes(1, 8<<20))
	f.Sync()
	f.Close()
	unix.Statfs(m.Dir, &after)
	used := int64(before.Bfree-after.Bfree) * after.Bsize
	if used < 8<<20 || used > 9<<20 {
		t.Errorf("free space went down by %d bytes after writing 8 MiB", used)
	}
	os.Remove(m.Path("big"))
	// The kernel sends RELEASE after close(2) has returned, and an unlinked
	// file keeps its blocks until its last release: the space comes back
	// shortly after, not necessarily by the next statfs.
	var back unix.Statfs_t
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		unix.Statfs(m.Dir, &back)
		if back.Bfree >= after.Bfree+(7<<20)/uint64(back.Bsize) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("free space did not come back after unlink: %d -> %d blocks", after.Bfree, back.Bfree)
			break
		}
	}
	m.finish()
}

func TestMmapSharedWrite(t *testing.T) {
	m := freshMount(t, "64M")
	p := m.Path("mm")
	const size = 5*4096 + 17
	orig := randBytes(3, size)
	mustWriteFile(t, p, orig)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap shared writable: %v", err)
	}
	if !bytes.Equal(mem, orig) {
		t.Errorf("mmap shows different content than was written")
	}
	want := append([]byte(nil), orig...)
	for _, off := range []int{0, 4095, 8192, size - 1} {
		mem[off] ^= 0xFF
		want[off] ^= 0xFF
	}
	copy(mem[12000:], "written through mmap")
	copy(want[12000:], "written through mmap")
	if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
		t.Errorf("msync: %v", err)
	}
	unix.Munmap(mem)
	f.Close()
	wantContent(t, p, want)
	m = m.remount()
	wantContent(t, m.Path("mm"), want)
	m.finish()
}

func TestFsyncFdatasync(t *testing.T) {
	m := freshMount(t, "64M")
	f, err := os.Create(m.Path("durable"))
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(11, 300000)
	f.Write(data)
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Errorf("fdatasync: %v", err)
	}
	f.WriteAt([]byte("more"), 10)
	copy(data[10:], "more")
	if err := f.Sync(); err != nil {
		t.Errorf("fsync: %v", err)
	}
	f.Close()
	d, err := os.Open(m.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Errorf("fsync of a directory: %v", err)
	}
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		t.Errorf("syncfs: %v", err)
	}
	d.Close()
	wantContent(t, m.Path("durable"), data)
	m = m.remount()
	wantContent(t, m.Path("durable"), data)
	m.finish()
}

// TestFsyncSurvivesKill: what was fsynced is on the image even when the
// daemon is killed without unmounting, and the image is consistent.
func TestFsyncSurvivesKill(t *testing.T) {
	m := freshMount(t, "64M")
	data := randBytes(12, 1<<20+77)
	f, err := os.Create(m.Path("synced"))
	if err != nil {
		t.Fatal(err)
	}
	f.Write(data)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	os.Mkdir(m.Path("dir"), 0o755)
	dd, _ := os.Open(m.Dir)
	if err := dd.Sync(); err != nil {
		t.Errorf("fsync dir: %v", err)
	}
	dd.Close()
	syscall.Kill(m.Pid(), syscall.SIGKILL)
	m.waitExit(false)
	lazyUnmount(m.Dir)
	m.mounted = false
	requireFsckClean(t, m.Image)
	m2 := mountImage(t, m.Image, "rw")
	wantContent(t, m2.Path("synced"), data)
	if st, err := os.Stat(m2.Path("dir")); err != nil || !st.IsDir() {
		t.Errorf("fsynced directory lost after kill: %v", err)
	}
	m2.finish()
}

// TestFillToENOSPC writes until the volume is full: the error is ENOSPC
// (from write, fsync or close), the image stays consistent, and deleting
// the file gives the space back.
func TestFillToENOSPC(t *testing.T) {
	m := freshMount(t, "32M")
	var before unix.Statfs_t
	unix.Statfs(m.Dir, &before)
	f, err := os.Create(m.Path("fill"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := randBytes(41, 1<<20)
	var werr error
	written := 0
	for i := 0; i < 64 && werr == nil; i++ {
		var n int
		n, werr = f.Write(chunk)
		written += n
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	wantErrno(t, "filling a 32 MiB volume with 64 MiB", werr, unix.ENOSPC)
	if written < 16<<20 {
		t.Errorf("only %d bytes fitted on a 32 MiB volume", written)
	}
	if err := os.Remove(m.Path("fill")); err != nil {
		t.Fatal(err)
	}
	// At once: the kernel may not have sent the RELEASE of "fill" yet, and
	// the write must wait for that space rather than fail.
	mustWriteFile(t, m.Path("after"), chunk)
	var after unix.Statfs_t
	unix.Statfs(m.Dir, &after)
	chunkBlocks := uint64(len(chunk)) / uint64(after.Bsize)
	if after.Bfree+after.Bfree/50+chunkBlocks < before.Bfree {
		t.Errorf("free blocks %d after deleting the file and writing 1 MiB, %d before filling", after.Bfree, before.Bfree)
	}
	m = m.remount()
	wantContent(t, m.Path("after"), chunk)
	m.finish()
}

// Times outside TFS's range (1970 to early 2106) are stored as the nearest
// time it can hold, as the kernel clamps to a filesystem's range, and keep
// that value across a remount; before, 1960 came back as 2096.
func TestTimesClampToRange(t *testing.T) {
	m := freshMount(t, "64M")
	old, future := m.Path("old"), m.Path("future")
	mustWriteFile(t, old, []byte("x"))
	mustWriteFile(t, future, []byte("y"))
	if err := os.Chtimes(old, time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(future, time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		for p, want := range map[string]time.Time{old: time.Unix(0, 0), future: time.Unix(1<<32-1, 999999999)} {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if !st.ModTime().Equal(want) {
				t.Errorf("%s %s: mtime %v, want %v", when, filepath.Base(p), st.ModTime().UTC(), want.UTC())
			}
		}
	}
	check("before the remount")
	m = m.remount()
	check("after the remount")
	m.finish()
}

// chattr +i and +a through the mount: the flags show in lsattr, survive a
// remount, and the daemon refuses what they forbid with EPERM.
func TestChattrImmutableAppendOnly(t *testing.T) {
	m := freshMount(t, "64M")
	f, a, d := m.Path("frozen"), m.Path("journal"), m.Path("dir")
	mustWriteFile(t, f, []byte("fixed\n"))
	mustWriteFile(t, a, []byte("one\n"))
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	mustRunCmd(t, "chattr", "+i", f)
	mustRunCmd(t, "chattr", "+a", a)
	mustRunCmd(t, "chattr", "+i", d)
	m = m.remount()
	for p, flag := range map[string]string{f: "i", a: "a", d: "i"} {
		out := mustRunCmd(t, "lsattr", "-d", p)
		if fields := strings.Fields(out); len(fields) == 0 || !strings.Contains(fields[0], flag) {
			t.Errorf("lsattr %s after a remount: %q, want %s", p, out, flag)
		}
	}
	eperm := func(err error, what string) {
		t.Helper()
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s: %v, want EPERM", what, err)
		}
	}
	eperm(os.WriteFile(f, []byte("changed"), 0o644), "overwrite an immutable file")
	eperm(os.Remove(f), "remove an immutable file")
	eperm(os.Rename(f, m.Path("elsewhere")), "rename an immutable file")
	eperm(os.Chmod(f, 0o755), "chmod an immutable file")
	eperm(os.WriteFile(filepath.Join(d, "new"), nil, 0o644), "create in an immutable directory")
	eperm(os.Truncate(a, 0), "truncate an append-only file")
	eperm(os.Remove(a), "remove an append-only file")
	af, err := os.OpenFile(a, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := af.WriteString("two\n"); err != nil {
		t.Errorf("append to an append-only file: %v", err)
	}
	af.Close()
	if b, _ := os.ReadFile(a); string(b) != "one\ntwo\n" {
		t.Errorf("append-only file holds %q", b)
	}
	if b, _ := os.ReadFile(f); string(b) != "fixed\n" {
		t.Errorf("immutable file holds %q", b)
	}
	mustRunCmd(t, "chattr", "-i", f, d)
	mustRunCmd(t, "chattr", "-a", a)
	if err := os.Remove(f); err != nil {
		t.Errorf("remove after chattr -i: %v", err)
	}
	m.finish()
}

// mustRunCmd runs a host command and returns its output.
func mustRunCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
