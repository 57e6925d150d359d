package fusefs

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMain lets the test binary act as a separate process that maps a file
// on the mount: page faults on a FUSE-backed mapping must not happen in the
// process serving the mount (see the go-fuse package doc on deadlocks).
func TestMain(m *testing.M) {
	if p := os.Getenv("FUSEFS_MMAP_CHILD"); p != "" {
		os.Exit(mmapChild(p, os.Getenv("FUSEFS_MMAP_DIRECT") != ""))
	}
	os.Exit(m.Run())
}

// mmapChild writes a pattern through a shared writable mapping of p and
// msyncs it; with direct, the mapped descriptor was opened with O_DIRECT
// (as fsx -Z does).
func mmapChild(p string, direct bool) int {
	flags := os.O_RDWR
	if direct {
		flags |= syscall.O_DIRECT
	}
	f, err := os.OpenFile(p, flags, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mmap:", err)
		return 1
	}
	for i := range mem {
		mem[i] = byte(i % 251)
	}
	if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
		fmt.Fprintln(os.Stderr, "msync:", err)
		return 1
	}
	if err := unix.Munmap(mem); err != nil {
		fmt.Fprintln(os.Stderr, "munmap:", err)
		return 1
	}
	return 0
}

func TestWriteReadPersist(t *testing.T) {
	v := newTestVolume(t, Config{})
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3<<20+12345)
	for i := range data {
		data[i] = byte(rng.IntN(256))
	}
	if err := os.WriteFile(v.path("f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	// Overwrite a range crossing page boundaries and append with O_APPEND.
	f, err := os.OpenFile(v.path("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	patch := bytes.Repeat([]byte{0xAB}, 10000)
	if _, err := f.WriteAt(patch, 4090); err != nil {
		t.Fatal(err)
	}
	copy(data[4090:], patch)
	f.Close()
	f, err = os.OpenFile(v.path("f"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Errorf("fsync: %v", err)
	}
	f.Close()
	data = append(data, "tail"...)
	v.remount(Config{})
	got, err := os.ReadFile(v.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, differ from the %d written", len(got), len(data))
	}
	// O_TRUNC empties the file; O_EXCL refuses an existing one.
	f, err = os.OpenFile(v.path("f"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st := stat(t, v.path("f")); st.Size != 0 {
		t.Errorf("after O_TRUNC size %d", st.Size)
	}
	if _, err := os.OpenFile(v.path("f"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("O_EXCL on an existing file: %v", err)
	}
}

func TestDirectWriteSeenByCachedReader(t *testing.T) {
	v := newTestVolume(t, Config{})
	p := v.path("f")
	if err := os.WriteFile(p, bytes.Repeat([]byte("a"), 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	cached, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer cached.Close()
	buf := make([]byte, 8192)
	if _, err := cached.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	direct, err := os.OpenFile(p, os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := direct.WriteAt(bytes.Repeat([]byte("b"), 4096), 0); err != nil {
		t.Fatal(err)
	}
	direct.Close()
	// A reader that already has the old bytes in the page cache sees the
	// new ones: the kernel invalidates around a direct write.
	want := append(bytes.Repeat([]byte("b"), 4096), bytes.Repeat([]byte("a"), 4096)...)
	if _, err := cached.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, want) {
		t.Errorf("cached reader after a direct write: %q..., %v", buf[:8], err)
	}
	r, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, want) {
		t.Errorf("new reader after a direct write: %q..., %v", buf[:8], err)
	}
}

func TestFallocateAndSeekHoles(t *testing.T) {
	v := newTestVolume(t, Config{})
	f, err := os.OpenFile(v.path("f"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if err := unix.Fallocate(fd, 0, 0, 1<<20); err != nil {
		t.Fatalf("fallocate mode 0: %v", err)
	}
	if st := stat(t, v.path("f")); st.Size != 1<<20 || st.Blocks < (1<<20)/512 {
		t.Errorf("after fallocate: size %d blocks %d", st.Size, st.Blocks)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 1<<20, 1<<20); err != nil {
		t.Errorf("fallocate KEEP_SIZE: %v", err)
	}
	if st := stat(t, v.path("f")); st.Size != 1<<20 {
		t.Errorf("KEEP_SIZE changed size to %d", st.Size)
	}
	for _, mode := range []uint32{unix.FALLOC_FL_COLLAPSE_RANGE, unix.FALLOC_FL_INSERT_RANGE} {
		if err := unix.Fallocate(fd, mode, 0, 4096); !errors.Is(err, syscall.EOPNOTSUPP) {
			t.Errorf("fallocate mode %#x: %v, want EOPNOTSUPP", mode, err)
		}
	}
	data := bytes.Repeat([]byte{7}, 1<<20)
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 256<<10, 256<<10); err != nil {
		t.Fatalf("punch hole: %v", err)
	}
	buf := make([]byte, 1<<20)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	copy(data[256<<10:512<<10], make([]byte, 256<<10))
	if !bytes.Equal(buf, data) {
		t.Error("punched range does not read as zeros, or data around it changed")
	}
	hole, err := unix.Seek(fd, 0, unix.SEEK_HOLE)
	if err != nil || hole != 256<<10 {
		t.Errorf("SEEK_HOLE from 0: %d, %v; want %d", hole, err, 256<<10)
	}
	data2, err := unix.Seek(fd, 256<<10, unix.SEEK_DATA)
	if err != nil || data2 != 512<<10 {
		t.Errorf("SEEK_DATA from the hole: %d, %v; want %d", data2, err, 512<<10)
	}
	if _, err := unix.Seek(fd, 2<<20, unix.SEEK_DATA); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("SEEK_DATA past EOF: %v, want ENXIO", err)
	}
}

// ZERO_RANGE through the kernel: zeros inside, data outside intact, the
// size grows without KEEP_SIZE only, and the content survives a remount.
func TestFallocateZeroRange(t *testing.T) {
	v := newTestVolume(t, Config{})
	data := bytes.Repeat([]byte("0123456789abcdef"), 8192) // 128 KiB
	if err := os.WriteFile(v.path("z"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(v.path("z"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	if err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, 1000, 50000); err != nil {
		t.Fatalf("ZERO_RANGE: %v", err)
	}
	clear(data[1000:51000])
	if err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, 120000, 100000); err != nil {
		t.Fatalf("ZERO_RANGE|KEEP_SIZE: %v", err)
	}
	clear(data[120000:])
	if st := stat(t, v.path("z")); st.Size != int64(len(data)) {
		t.Errorf("KEEP_SIZE changed the size to %d", st.Size)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, 130000, 10000); err != nil {
		t.Fatalf("ZERO_RANGE past the end: %v", err)
	}
	data = append(data, make([]byte, 140000-len(data))...)
	if st := stat(t, v.path("z")); st.Size != 140000 || st.Blocks*512 < 140000 {
		t.Errorf("after ZERO_RANGE past the end: size %d blocks %d, want 140000 allocated", st.Size, st.Blocks)
	}
	f.Close()
	for _, when := range []string{"mounted", "after remount"} {
		got, err := os.ReadFile(v.path("z"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s: content differs from the expected zeroed ranges", when)
		}
		v.remount(Config{})
	}
}

func TestCopyFileRange(t *testing.T) {
	v := newTestVolume(t, Config{})
	src := bytes.Repeat([]byte("0123456789abcdef"), 200000) // 3.2 MB
	if err := os.WriteFile(v.path("src"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(v.path("src"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(v.path("dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var offIn, offOut int64 = 100, 0
	total := 0
	for total < len(src)-100 {
		n, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, len(src), 0)
		if err != nil {
			t.Fatalf("copy_file_range: %v", err)
		}
		if n == 0 {
			break
		}
		total += n
	}
	got, err := os.ReadFile(v.path("dst"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, src[100:]) {
		t.Errorf("copied %d bytes, differ from source (%d)", len(got), len(src)-100)
	}
}

func TestSharedWritableMmap(t *testing.T) {
	v := newTestVolume(t, Config{})
	for _, name := range []string{"plain", "direct"} {
		p := v.path(name)
		if err := os.WriteFile(p, make([]byte, 8192), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "FUSEFS_MMAP_CHILD="+p)
		if name == "direct" {
			cmd.Env = append(cmd.Env, "FUSEFS_MMAP_DIRECT=1")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mmap child (%s): %v: %s", name, err, out)
		}
	}
	v.remount(Config{})
	for _, name := range []string{"plain", "direct"} {
		got, err := os.ReadFile(v.path(name))
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range got {
			if b != byte(i%251) {
				t.Fatalf("%s: byte %d is %d after the mapped write, want %d", name, i, b, i%251)
			}
		}
	}
}
