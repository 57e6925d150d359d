package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestReadOnlyMount(t *testing.T) {
	img := newImage(t, "32M")
	m := mountImage(t, img, "rw")
	os.Mkdir(m.Path("d"), 0o755)
	mustWriteFile(t, m.Path("d", "f"), []byte("content"))
	m.finish()
	before := sha256File(t, img)

	m = mountImage(t, img, "ro")
	if e, _ := findMount(m.Dir); !strings.Contains(","+e.options+",", ",ro,") {
		t.Errorf("ro mount shows options %q", e.options)
	}
	wantContent(t, m.Path("d", "f"), []byte("content"))
	_, err := os.Create(m.Path("new"))
	wantErrno(t, "create on ro", err, unix.EROFS)
	_, err = os.OpenFile(m.Path("d", "f"), os.O_WRONLY, 0)
	wantErrno(t, "open for writing on ro", err, unix.EROFS)
	wantErrno(t, "mkdir on ro", os.Mkdir(m.Path("d2"), 0o755), unix.EROFS)
	wantErrno(t, "unlink on ro", os.Remove(m.Path("d", "f")), unix.EROFS)
	wantErrno(t, "rename on ro", os.Rename(m.Path("d"), m.Path("e")), unix.EROFS)
	wantErrno(t, "truncate on ro", os.Truncate(m.Path("d", "f"), 0), unix.EROFS)
	wantErrno(t, "symlink on ro", os.Symlink("x", m.Path("l")), unix.EROFS)
	wantErrno(t, "setxattr on ro", unix.Setxattr(m.Path("d"), "user.a", []byte("1"), 0), unix.EROFS)
	m.Unmount()
	if sha256File(t, img) != before {
		t.Errorf("the image changed under a read-only mount")
	}
	requireFsckClean(t, img)
}

func TestSecondMountRefused(t *testing.T) {
	requireFUSE(t)
	img := newImage(t, "32M")
	m := mountImage(t, img, "rw")
	mustWriteFile(t, m.Path("f"), []byte("first"))
	dir2 := filepath.Join(t.TempDir(), "mnt2")
	os.Mkdir(dir2, 0o755)
	m2, err := startMount(t, img, dir2, "rw")
	if err == nil {
		m2.Unmount()
		t.Fatalf("a second read-write mount of %s was allowed", img)
	}
	if _, ok := mountSource(dir2); ok {
		t.Errorf("the refused second mount left a mount on %s", dir2)
	}
	// The first mount is unaffected.
	wantContent(t, m.Path("f"), []byte("first"))
	m.finish()
}

// TestBackgroundMode runs tfsmount without -f the way users do: it must
// return only once the mount is ready, with fsname equal to the IMAGE
// argument exactly (here a relative path), and leave a daemon that writes
// everything back when unmounted.
func TestBackgroundMode(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "bg.img")
	mustRun(t, "mkfs", "--size", "32M", img)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	t.Cleanup(func() { lazyUnmount(mnt); waitReleasedQuiet(img) })
	cmd := exec.Command(tfsmountBin, "-o", "rw", "bg.img", mnt)
	cmd.Dir = dir
	done := make(chan error, 1)
	var out []byte
	go func() {
		var err error
		out, err = cmd.CombinedOutput()
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tfsmount in background mode: %v\n%s", err, out)
		}
	case <-time.After(mountTimeout):
		cmd.Process.Kill()
		t.Fatalf("tfsmount in background mode did not return within %v", mountTimeout)
	}
	src, ok := mountSource(mnt)
	if !ok {
		t.Fatalf("tfsmount returned but %s is not mounted", mnt)
	}
	if src != "bg.img" {
		t.Errorf("mount source %q, want the IMAGE argument %q", src, "bg.img")
	}
	data := randBytes(21, 3<<20)
	mustWriteFile(t, filepath.Join(mnt, "data"), data)
	if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v %s", err, out)
	}
	waitReleased(t, img, daemonExitTimeout)
	requireFsckClean(t, img)
	r := mustRun(t, "cat", img, "/data")
	if sha256Bytes(r.Stdout) != sha256Bytes(data) {
		t.Errorf("data written in background mode: cat gives %d bytes, differs", len(r.Stdout))
	}
}

func waitReleasedQuiet(path string) {
	deadline := time.Now().Add(30 * time.Second)
	for len(processesHolding(path)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMountHelper mounts through mount(8): `mount -t fuse.tfsmount IMAGE
// DIR` runs /sbin/mount.fuse.tfsmount, which is the binary itself.
func TestMountHelper(t *testing.T) {
	requireFUSE(t)
	helper := "/sbin/mount.fuse.tfsmount"
	if fi, err := os.Lstat(helper); err == nil {
		if fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("%s exists and is not a symlink left by this test; not touching it", helper)
		}
		os.Remove(helper)
	}
	if err := os.Symlink(tfsmountBin, helper); err != nil {
		t.Fatalf("install mount helper: %v", err)
	}
	t.Cleanup(func() { os.Remove(helper) })
	img := newImage(t, "32M")
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	t.Cleanup(func() { lazyUnmount(mnt); waitReleasedQuiet(img) })
	out, err := exec.Command("mount", "-t", "fuse.tfsmount", "-o", "rw,nosuid,nodev,allow_other,default_permissions", img, mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("mount -t fuse.tfsmount: %v\n%s", err, out)
	}
	e, ok := findMount(mnt)
	if !ok {
		t.Fatalf("mount(8) returned but %s is not mounted", mnt)
	}
	if e.source != img || !strings.HasPrefix(e.fstype, "fuse") {
		t.Errorf("mount shows source %q type %q, want %q fuse*", e.source, e.fstype, img)
	}
	mustWriteFile(t, filepath.Join(mnt, "via-helper"), []byte("helper"))
	if out, err := exec.Command("umount", img).CombinedOutput(); err != nil {
		t.Fatalf("umount %s: %v\n%s", img, err, out)
	}
	if _, ok := mountSource(mnt); ok {
		t.Errorf("still mounted after umount SOURCE")
	}
	waitReleased(t, img, daemonExitTimeout)
	requireFsckClean(t, img)
	if r := mustRun(t, "cat", img, "/via-helper"); string(r.Stdout) != "helper" {
		t.Errorf("file written through the helper mount reads %q", r.Stdout)
	}
}

// TestSignalsUnmount: SIGTERM and SIGINT make the daemon unmount and write
// everything, without any sync from the test.
func TestSignalsUnmount(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			m := freshMount(t, "64M")
			data := randBytes(int64(sig), 5<<20+3)
			mustWriteFile(t, m.Path("unsynced"), data)
			os.MkdirAll(m.Path("a", "b"), 0o755)
			if err := syscall.Kill(m.Pid(), sig); err != nil {
				t.Fatal(err)
			}
			m.waitExit(true)
			deadline := time.Now().Add(10 * time.Second)
			for {
				if _, ok := mountSource(m.Dir); !ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: daemon exited but %s is still mounted", sig, m.Dir)
				}
				time.Sleep(20 * time.Millisecond)
			}
			m.mounted = false
			requireFsckClean(t, m.Image)
			m2 := mountImage(t, m.Image, "ro")
			wantContent(t, m2.Path("unsynced"), data)
			if st, err := os.Stat(m2.Path("a", "b")); err != nil || !st.IsDir() {
				t.Errorf("directory lost: %v", err)
			}
			m2.Unmount()
		})
	}
}

// TestMountOptions: ownership and mode options, fsname=, and options tfsmount
// does not know (which it must accept with a warning, as mount(8) passes
// them).
func TestMountOptions(t *testing.T) {
	img := newImage(t, "32M")
	m := mountImage(t, img, "rw", "uid=1234", "gid=5678", "umask=027", "fsname=custom-src", "nosuid", "nodev", "relatime", "bogus_option=1")
	if src, _ := mountSource(m.Dir); src != "custom-src" {
		t.Errorf("fsname= gives source %q", src)
	}
	mustWriteFile(t, m.Path("f"), []byte("x"))
	os.Mkdir(m.Path("d"), 0o755)
	for _, p := range []string{m.Dir, m.Path("f"), m.Path("d")} {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("%s: uid/gid %d/%d, want 1234/5678", p, st.Uid, st.Gid)
		}
		if st.Mode&0o027 != 0 {
			t.Errorf("%s: mode %o not masked by umask 027", p, st.Mode&0o7777)
		}
	}
	m.finish()
}

// TestMkfsFromAndPut: mkfs --from copies a host tree in, put adds a file
// offline, and both read back through the mount and offline.
func TestMkfsFromAndPut(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "etc", "deep", "er"), 0o755)
	os.WriteFile(filepath.Join(src, "etc", "config"), []byte("key=value\n"), 0o644)
	big := randBytes(31, 700001)
	os.WriteFile(filepath.Join(src, "etc", "deep", "er", "blob"), big, 0o644)
	os.WriteFile(filepath.Join(src, "empty"), nil, 0o644)
	os.Symlink("etc/config", filepath.Join(src, "link"))
	img := filepath.Join(t.TempDir(), "from.img")
	mustRun(t, "mkfs", "--label", "fromtest", "--size", "32M", "--from", src, img)
	requireFsckClean(t, img)

	put := randBytes(32, 12345)
	hostFile := filepath.Join(t.TempDir(), "put.bin")
	os.WriteFile(hostFile, put, 0o644)
	mustRun(t, "put", img, hostFile, "/etc/put.bin")
	requireFsckClean(t, img)

	if r := mustRun(t, "cat", img, "/etc/deep/er/blob"); sha256Bytes(r.Stdout) != sha256Bytes(big) {
		t.Errorf("cat of a --from file gives %d bytes, differs", len(r.Stdout))
	}
	if r := mustRun(t, "cat", img, "/etc/put.bin"); sha256Bytes(r.Stdout) != sha256Bytes(put) {
		t.Errorf("cat of a put file gives %d bytes, differs", len(r.Stdout))
	}
	r := mustRun(t, "ls", img, "/etc")
	for _, name := range []string{"config", "deep", "put.bin"} {
		if !strings.Contains(string(r.Stdout), name) {
			t.Errorf("ls /etc does not list %s:\n%s", name, r.Stdout)
		}
	}
	if r := runTool(t, time.Minute, "cat", img, "/no/such"); r.Err == nil {
		t.Errorf("cat of a missing path succeeded")
	}

	m := mountImage(t, img, "rw")
	wantContent(t, m.Path("etc", "config"), []byte("key=value\n"))
	wantContent(t, m.Path("etc", "deep", "er", "blob"), big)
	wantContent(t, m.Path("etc", "put.bin"), put)
	wantContent(t, m.Path("empty"), nil)
	if got, err := os.Readlink(m.Path("link")); err != nil || got != "etc/config" {
		t.Errorf("symlink from --from: %q %v", got, err)
	}
	m.finish()
}
