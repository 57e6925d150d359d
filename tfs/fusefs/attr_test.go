package fusefs

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/tfsmount/tfsmount/tfs"
	"golang.org/x/sys/unix"
)

// runOnMount returns a command that runs the program at p, a file on this
// process's own mount, through /bin/sh. Go starts children with vfork, which
// holds the parent thread outside any syscall the runtime knows of until the
// child's execve is done; an execve of a file on our mount needs our FUSE
// server, which cannot run while a garbage collection waits for that thread
// to stop. Exec'ing /bin/sh first keeps the parent's wait off the mount.
func runOnMount(p string) *exec.Cmd {
	return exec.Command("/bin/sh", "-c", `exec "$0"`, p)
}

func stat(t *testing.T, p string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return st
}

func TestModesFollowUmaskAndOwner(t *testing.T) {
	v := newTestVolume(t, Config{UID: 1234, GID: 5678, Umask: 0o027})
	if err := os.Mkdir(v.path("d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(v.path("f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", v.path("l")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		mode uint32
	}{
		{"", syscall.S_IFDIR | 0o750},
		{"d", syscall.S_IFDIR | 0o750},
		{"f", syscall.S_IFREG | 0o640},
		{"l", syscall.S_IFLNK | 0o777},
	} {
		st := stat(t, v.path(c.name))
		if st.Mode != c.mode {
			t.Errorf("%q: mode %o, want %o", c.name, st.Mode, c.mode)
		}
		if st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("%q: owner %d:%d, want 1234:5678", c.name, st.Uid, st.Gid)
		}
	}
}

func TestChmodChownOnlyWhenUnchanged(t *testing.T) {
	v := newTestVolume(t, Config{UID: 0, GID: 0, Umask: 0o022})
	f := v.path("f")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f, 0o644); err != nil {
		t.Errorf("chmod to the shown mode: %v", err)
	}
	if err := os.Chmod(f, 0o600); !errors.Is(err, syscall.EPERM) {
		t.Errorf("chmod 600: %v, want EPERM", err)
	}
	if err := os.Chown(f, 0, 0); err != nil {
		t.Errorf("chown to the shown owner: %v", err)
	}
	if err := os.Chown(f, 42, -1); !errors.Is(err, syscall.EPERM) {
		t.Errorf("chown 42: %v, want EPERM", err)
	}
	if st := stat(t, f); st.Mode&0o777 != 0o644 || st.Uid != 0 {
		t.Errorf("after refused changes: mode %o uid %d", st.Mode&0o777, st.Uid)
	}

	v.remount(Config{UID: 0, GID: 0, Umask: 0o022, IgnoreChmod: true})
	f = v.path("f")
	if err := os.Chmod(f, 0o600); err != nil {
		t.Errorf("chmod with IgnoreChmod: %v", err)
	}
	if err := os.Chown(f, 42, 42); err != nil {
		t.Errorf("chown with IgnoreChmod: %v", err)
	}
	if st := stat(t, f); st.Mode&0o777 != 0o644 || st.Uid != 0 {
		t.Errorf("IgnoreChmod changed what is shown: mode %o uid %d", st.Mode&0o777, st.Uid)
	}
}

func TestLinkCounts(t *testing.T) {
	v := newTestVolume(t, Config{})
	for _, d := range []string{"a", "a/b", "a/c", "a/c/d"} {
		if err := os.Mkdir(v.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(v.path("a/f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(v.path("a/f"), v.path("a/b/g")); err != nil {
		t.Fatal(err)
	}
	if n := stat(t, v.path("a")).Nlink; n != 4 {
		t.Errorf("a has 2 subdirectories: nlink %d, want 4", n)
	}
	if n := stat(t, v.path("a/b")).Nlink; n != 2 {
		t.Errorf("a/b has no subdirectories: nlink %d, want 2", n)
	}
	f, g := stat(t, v.path("a/f")), stat(t, v.path("a/b/g"))
	if f.Nlink != 2 || f.Ino != g.Ino {
		t.Errorf("hard links: nlink %d ino %d/%d, want 2 and equal inodes", f.Nlink, f.Ino, g.Ino)
	}
	if err := os.Remove(v.path("a/f")); err != nil {
		t.Fatal(err)
	}
	if n := stat(t, v.path("a/b/g")).Nlink; n != 1 {
		t.Errorf("after unlinking one name: nlink %d, want 1", n)
	}
	v.remount(Config{})
	if n := stat(t, v.path("a")).Nlink; n != 4 {
		t.Errorf("after remount: a nlink %d, want 4", n)
	}
	if b, err := os.ReadFile(v.path("a/b/g")); err != nil || string(b) != "data" {
		t.Errorf("after remount: a/b/g = %q, %v", b, err)
	}
}

func TestTimesAndTruncatePersist(t *testing.T) {
	v := newTestVolume(t, Config{})
	f := v.path("f")
	if err := os.WriteFile(f, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
	atime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(f, atime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f, 4); err != nil {
		t.Fatal(err)
	}
	// Truncating sets mtime to now (POSIX); set it again to check the value.
	if err := os.Chtimes(f, atime, mtime); err != nil {
		t.Fatal(err)
	}
	v.remount(Config{})
	st := stat(t, v.path("f"))
	got := time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
	// TFS keeps 32.32 fixed-point seconds: a nanosecond or so of rounding.
	if d := got.Sub(mtime); d < -time.Microsecond || d > time.Microsecond {
		t.Errorf("mtime %v, want %v", got, mtime)
	}
	if st.Ctim != st.Mtim {
		t.Errorf("ctime %v differs from mtime %v", st.Ctim, st.Mtim)
	}
	if b, err := os.ReadFile(v.path("f")); err != nil || string(b) != "0123" {
		t.Errorf("after truncate to 4: %q, %v", b, err)
	}
	if err := os.Truncate(v.path("f"), 8); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(v.path("f")); err != nil || string(b) != "0123\x00\x00\x00\x00" {
		t.Errorf("truncate down then up must read zeros: %q, %v", b, err)
	}
}

func TestStatfsReportsVolume(t *testing.T) {
	v := newTestVolume(t, Config{})
	var before unix.Statfs_t
	if err := unix.Statfs(v.dir, &before); err != nil {
		t.Fatal(err)
	}
	if before.Bsize != 512 || before.Blocks == 0 || before.Blocks > 64<<20/512 || before.Bfree > before.Blocks {
		t.Fatalf("statfs: bsize %d blocks %d free %d", before.Bsize, before.Blocks, before.Bfree)
	}
	if before.Namelen != 255 {
		t.Errorf("namelen %d, want 255", before.Namelen)
	}
	data := make([]byte, 4<<20)
	if err := os.WriteFile(v.path("big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(v.path("big"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var after unix.Statfs_t
	if err := unix.Statfs(v.dir, &after); err != nil {
		t.Fatal(err)
	}
	if used := int64(before.Bfree) - int64(after.Bfree); used < 4<<20/512 {
		t.Errorf("writing 4 MiB used %d blocks, want at least %d", used, 4<<20/512)
	}
}

// TestCtimeFollowsChanges ports the checks of xfstests generic/221 and
// generic/236: utimes and link change ctime although TFS stores none.
func TestCtimeFollowsChanges(t *testing.T) {
	v := newTestVolume(t, Config{})
	f := v.path("f")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	past := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(f, past, past); err != nil {
		t.Fatal(err)
	}
	st := stat(t, f)
	ctime := time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	if time.Since(ctime) > time.Minute {
		t.Errorf("after utimes to 2001, ctime is %v, want about now", ctime)
	}
	for _, change := range []struct {
		name string
		do   func() error
	}{
		{"link", func() error { return os.Link(f, v.path("g")) }},
		{"unlink of another name", func() error { return os.Remove(v.path("g")) }},
		{"setxattr", func() error { return unix.Setxattr(f, "user.k", []byte("v"), 0) }},
		{"rename", func() error { return os.Rename(f, v.path("h")) }},
	} {
		before := stat(t, f)
		time.Sleep(20 * time.Millisecond)
		if err := change.do(); err != nil {
			t.Fatalf("%s: %v", change.name, err)
		}
		p := f
		if change.name == "rename" {
			p = v.path("h")
		}
		after := stat(t, p)
		if after.Ctim.Nano() <= before.Ctim.Nano() {
			t.Errorf("%s did not advance ctime: %v -> %v", change.name, before.Ctim, after.Ctim)
		}
		if after.Mtim != before.Mtim {
			t.Errorf("%s changed mtime: %v -> %v", change.name, before.Mtim, after.Mtim)
		}
	}
}

// chmod stores what TFS can: any x bit sets the exec flag, no w bit sets
// readonly. The flags survive a remount, an executable script runs, and
// modes the flags cannot express stay EPERM.
func TestChmodStoresExecAndReadonly(t *testing.T) {
	v := newTestVolume(t, Config{UID: 0, GID: 0, Umask: 0o022})
	f := v.path("run.sh")
	if err := os.WriteFile(f, []byte("#!/bin/sh\nexit 7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f, 0o755); err != nil {
		t.Fatalf("chmod 755: %v", err)
	}
	if st := stat(t, f); st.Mode != syscall.S_IFREG|0o755 {
		t.Errorf("after chmod 755: mode %o", st.Mode)
	}
	err := runOnMount(f).Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Errorf("running the script: %v, want exit status 7", err)
	}
	v.remount(Config{UID: 0, GID: 0, Umask: 0o022})
	f = v.path("run.sh")
	if st := stat(t, f); st.Mode != syscall.S_IFREG|0o755 {
		t.Errorf("exec flag after remount: mode %o", st.Mode)
	}
	for _, c := range []struct {
		mode, want uint32
	}{
		{0o555, 0o555}, // exec + readonly
		{0o444, 0o444}, // readonly
		{0o644, 0o644}, // neither
		{0o711, 0o755}, // any x bit: exec; the shown mode differs, so EPERM
		{0o4755, 0o644},
		{0o600, 0o644},
	} {
		err := os.Chmod(f, os.FileMode(c.mode&0o777)|modeBits(c.mode))
		refused := c.mode != c.want
		if refused && !errors.Is(err, syscall.EPERM) {
			t.Errorf("chmod %o: %v, want EPERM", c.mode, err)
		}
		if !refused && err != nil {
			t.Errorf("chmod %o: %v", c.mode, err)
		}
		if st := stat(t, f); !refused && st.Mode&0o7777 != c.want {
			t.Errorf("after chmod %o: mode %o, want %o", c.mode, st.Mode&0o7777, c.want)
		}
	}
	if st := stat(t, f); st.Mode&0o7777 != 0o644 {
		t.Errorf("refused chmods changed the mode to %o", st.Mode&0o7777)
	}
	if err := os.Chmod(f, 0o444); err != nil {
		t.Fatal(err)
	}
	// Root writes a readonly file, as it writes a 0444 file on a kernel
	// filesystem; TestReadOnlyDeniesOthers covers everyone else.
	if w, err := os.OpenFile(f, os.O_WRONLY, 0); err != nil {
		t.Errorf("root opening a readonly file for writing: %v", err)
	} else {
		w.Close()
	}
	if err := os.Chmod(v.path(""), 0o700); !errors.Is(err, syscall.EPERM) {
		t.Errorf("chmod of the root directory to 700: %v, want EPERM", err)
	}
	v.remount(Config{UID: 0, GID: 0, Umask: 0o022, IgnoreChmod: true})
	f = v.path("run.sh")
	if st := stat(t, f); st.Mode&0o7777 != 0o444 {
		t.Errorf("readonly after remount: mode %o", st.Mode&0o7777)
	}
	// ignore_chmod still stores the flags and drops the rest.
	if err := os.Chmod(f, 0o4700); err != nil {
		t.Errorf("chmod 4700 with IgnoreChmod: %v", err)
	}
	if st := stat(t, f); st.Mode&0o7777 != 0o755 {
		t.Errorf("after chmod 4700 with IgnoreChmod: mode %o, want 755", st.Mode&0o7777)
	}
}

// modeBits maps the setuid/setgid/sticky bits of a numeric mode to
// os.FileMode's flags.
func modeBits(m uint32) os.FileMode {
	var f os.FileMode
	if m&0o4000 != 0 {
		f |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		f |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		f |= os.ModeSticky
	}
	return f
}

// fstat through a descriptor open to a directory that rename replaced, or
// rmdir removed, shows nlink 0, as does an open file with no names left
// (xfstests generic/035).
func TestRemovedNodesNlinkZero(t *testing.T) {
	v := newTestVolume(t, Config{})
	for _, d := range []string{"src", "dst", "gone"} {
		if err := os.Mkdir(v.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(v.path("f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	open := func(p string) *os.File {
		fd, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fd.Close() })
		return fd
	}
	dst, gone, f := open(v.path("dst")), open(v.path("gone")), open(v.path("f"))
	if err := syscall.Rename(v.path("src"), v.path("dst")); err != nil { // os.Rename refuses an existing directory
		t.Fatal(err)
	}
	if err := os.Remove(v.path("gone")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(v.path("f")); err != nil {
		t.Fatal(err)
	}
	for name, fd := range map[string]*os.File{"replaced directory": dst, "removed directory": gone, "unlinked file": f} {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(fd.Fd()), &st); err != nil {
			t.Fatalf("fstat %s: %v", name, err)
		}
		if st.Nlink != 0 {
			t.Errorf("%s: nlink %d, want 0", name, st.Nlink)
		}
	}
	if st := stat(t, v.path("dst")); st.Nlink != 2 {
		t.Errorf("directory renamed into place: nlink %d, want 2", st.Nlink)
	}
}

// A new file gets the flags of its creation mode ('cp' of an executable,
// xfstests generic/452); opening an existing file with O_CREAT keeps its
// flags.
func TestCreateModeSetsFlags(t *testing.T) {
	v := newTestVolume(t, Config{UID: 0, GID: 0, Umask: 0o022})
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	for _, c := range []struct {
		name string
		mode uint32
		want uint32
	}{
		{"exe", 0o755, 0o755},
		{"plain", 0o644, 0o644},
		{"ro", 0o444, 0o444},
		{"rox", 0o555, 0o555},
	} {
		fd, err := syscall.Open(v.path(c.name), syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY, c.mode)
		if err != nil {
			t.Fatalf("create %s: %v", c.name, err)
		}
		syscall.Close(fd)
		if st := stat(t, v.path(c.name)); st.Mode&0o7777 != c.want {
			t.Errorf("%s made with %o: mode %o, want %o", c.name, c.mode, st.Mode&0o7777, c.want)
		}
	}
	if err := syscall.Mknod(v.path("mk"), syscall.S_IFREG|0o700, 0); err != nil {
		t.Fatal(err)
	}
	if st := stat(t, v.path("mk")); st.Mode&0o7777 != 0o755 {
		t.Errorf("mknod S_IFREG 700: mode %o, want 755", st.Mode&0o7777)
	}
	fd, err := syscall.Open(v.path("plain"), syscall.O_CREAT|syscall.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	if st := stat(t, v.path("plain")); st.Mode&0o7777 != 0o644 {
		t.Errorf("O_CREAT of an existing file changed its mode to %o", st.Mode&0o7777)
	}
	cp := exec.Command("cp", "/bin/true", v.path("true"))
	if out, err := cp.CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	v.remount(Config{UID: 0, GID: 0, Umask: 0o022})
	if err := runOnMount(v.path("true")).Run(); err != nil {
		t.Errorf("running a copied binary after remount: %v", err)
	}
	if st := stat(t, v.path("exe")); st.Mode&0o7777 != 0o755 {
		t.Errorf("exe after remount: mode %o", st.Mode&0o7777)
	}
}

// The readonly flag refuses writes to every caller but root, and to a
// caller the request does not identify.
func TestReadOnlyDeniesOthers(t *testing.T) {
	ro := tfs.Attr{Kind: tfs.KindFile, ReadOnly: true}
	rw := tfs.Attr{Kind: tfs.KindFile}
	as := func(uid uint32) context.Context {
		return fuse.NewContext(context.Background(), &fuse.Caller{Owner: fuse.Owner{Uid: uid}})
	}
	for _, c := range []struct {
		name string
		ctx  context.Context
		a    tfs.Attr
		want bool
	}{
		{"root, readonly", as(0), ro, false},
		{"user, readonly", as(1000), ro, true},
		{"unknown caller, readonly", context.Background(), ro, true},
		{"user, writable", as(1000), rw, false},
	} {
		if got := readOnlyDenies(c.ctx, c.a); got != c.want {
			t.Errorf("%s: denied %v, want %v", c.name, got, c.want)
		}
	}
}
