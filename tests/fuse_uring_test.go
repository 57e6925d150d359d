package tests

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// uringParam is the kernel's switch for FUSE over io_uring.
const uringParam = "/sys/module/fuse/parameters/enable_uring"

// setFuseURing sets the kernel's switch for the rest of the test and puts
// the old value back at its end. Root can; a kernel built without FUSE over
// io_uring has no switch, and the test cannot run there.
func setFuseURing(t *testing.T, on bool) {
	t.Helper()
	old, err := os.ReadFile(uringParam)
	if os.IsNotExist(err) {
		t.Skipf("this kernel has no FUSE over io_uring (%s missing)", uringParam)
	}
	if err != nil {
		t.Fatal(err)
	}
	v := "N"
	if on {
		v = "Y"
	}
	if err := os.WriteFile(uringParam, []byte(v), 0o644); err != nil {
		t.Fatalf("turn FUSE over io_uring %s: %v", v, err)
	}
	t.Cleanup(func() { os.WriteFile(uringParam, bytes.TrimSpace(old), 0o644) })
}

// servedOverURing reads the count the daemon's stats print at unmount.
func servedOverURing(t *testing.T, m *mount) int64 {
	t.Helper()
	match := regexp.MustCompile(`FUSE requests served over io_uring: (\d+)`).FindStringSubmatch(m.stderr.String())
	if match == nil {
		t.Fatalf("no io_uring request count in the daemon's output:\n%s", m.stderr)
	}
	n, _ := strconv.ParseInt(match[1], 10, 64)
	return n
}

// Requests go over io_uring with fuse_uring=on: many writers and O_DIRECT
// readers at once (several requests in flight on each CPU's queue), names,
// renames, xattrs and truncation; everything is there after a remount over
// /dev/fuse, and fsck is clean.
func TestFuseURing(t *testing.T) {
	setFuseURing(t, true)
	m := freshMount(t, "256M", "fuse_uring=on,stats")
	const files, size = 24, 3 << 20
	var wg sync.WaitGroup
	errs := make(chan error, files)
	for i := range files {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := m.Path(fmt.Sprintf("f%02d", i))
			if err := os.WriteFile(p, randBytes(int64(i), size), 0o644); err != nil {
				errs <- err
				return
			}
			if err := unix.Setxattr(p, "user.n", []byte(strconv.Itoa(i)), 0); err != nil {
				errs <- fmt.Errorf("setxattr %s: %w", p, err)
				return
			}
			// O_DIRECT reads of 4 KiB each, so every one is a request.
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT, 0)
			if err != nil {
				errs <- err
				return
			}
			defer unix.Close(fd)
			buf, _ := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
			defer unix.Munmap(buf)
			want := randBytes(int64(i), size)
			for off := 0; off < size; off += 64 << 10 {
				if n, err := unix.Pread(fd, buf, int64(off)); err != nil || n != 4096 || !bytes.Equal(buf, want[off:off+4096]) {
					errs <- fmt.Errorf("O_DIRECT read of %s at %d: %d bytes, %v, or wrong data", p, off, n, err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if err := os.Rename(m.Path("f00"), m.Path("renamed")); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(m.Path("f01"), 1000); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(m.Dir)
	if err != nil || len(ents) != files {
		t.Fatalf("readdir: %d entries, %v; want %d", len(ents), err, files)
	}
	m.Unmount()
	if n := servedOverURing(t, m); n < files*(size/(64<<10)) {
		t.Errorf("%d requests over io_uring; the O_DIRECT reads alone were %d", n, files*(size/(64<<10)))
	}
	requireFsckClean(t, m.Image)

	m = mountAt(t, m.Image, m.Dir, "rw", "fuse_uring=off")
	for i := 1; i < files; i++ {
		p := m.Path(fmt.Sprintf("f%02d", i))
		got, err := os.ReadFile(p)
		want := randBytes(int64(i), size)
		if i == 1 {
			want = want[:1000]
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s after remount: %d bytes, %v; want its data", p, len(got), err)
		}
		if v := make([]byte, 8); true {
			n, err := unix.Getxattr(p, "user.n", v)
			if err != nil || string(v[:n]) != strconv.Itoa(i) {
				t.Errorf("xattr of %s: %q, %v", p, v[:n], err)
			}
		}
	}
	if got, err := os.ReadFile(m.Path("renamed")); err != nil || !bytes.Equal(got, randBytes(0, size)) {
		t.Errorf("renamed file: %d bytes, %v", len(got), err)
	}
	m.finish()
}

// Where the kernel has FUSE over io_uring turned off, fuse_uring=on refuses
// to mount and says why, and auto mounts over /dev/fuse and says so.
func TestFuseURingUnavailable(t *testing.T) {
	if strings.Contains(os.Getenv("TFS_E2E_MOUNT_OPTS"), "fuse_uring") {
		t.Skip("TFS_E2E_MOUNT_OPTS sets fuse_uring for every mount")
	}
	setFuseURing(t, false)
	img := newImage(t, "16M")
	dir := t.TempDir()
	m, err := startMount(t, img, dir, "fuse_uring=on")
	if err == nil {
		m.Unmount()
		t.Fatal("fuse_uring=on mounted with the kernel's switch off")
	}
	if !strings.Contains(err.Error(), "FUSE over io_uring is not available") || !strings.Contains(err.Error(), "enable_uring") {
		t.Errorf("refusal does not say why: %v", err)
	}
	m = mountAt(t, img, dir, "rw", "fuse_uring=auto,stats")
	mustWriteFile(t, m.Path("a"), []byte("over /dev/fuse"))
	m.finish()
	out := m.stderr.String()
	if !strings.Contains(out, "FUSE over io_uring not used") {
		t.Errorf("auto fell back without saying so:\n%s", out)
	}
	if strings.Contains(out, "served over io_uring") {
		t.Errorf("auto with the switch off still reports io_uring:\n%s", out)
	}
}
