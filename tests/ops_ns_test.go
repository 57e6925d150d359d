package tests

import (
	"bytes"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func listDir(t *testing.T, p string) []string {
	t.Helper()
	ents, err := os.ReadDir(p)
	if err != nil {
		t.Fatalf("readdir %s: %v", p, err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func wantNames(t *testing.T, p string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if got := listDir(t, p); strings.Join(got, "/") != strings.Join(want, "/") {
		t.Errorf("%s holds %q, want %q", p, got, want)
	}
}

func TestDirectories(t *testing.T) {
	m := freshMount(t, "64M")
	if err := os.MkdirAll(m.Path("a", "b", "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "mkdir an existing directory", os.Mkdir(m.Path("a"), 0o755), unix.EEXIST)
	mustWriteFile(t, m.Path("a", "file"), []byte("x"))
	wantErrno(t, "mkdir over a file", os.Mkdir(m.Path("a", "file"), 0o755), unix.EEXIST)
	wantErrno(t, "mkdir in a missing dir", os.Mkdir(m.Path("zz", "y"), 0o755), unix.ENOENT)
	wantErrno(t, "rmdir a non-empty dir", unix.Rmdir(m.Path("a")), unix.ENOTEMPTY)
	wantErrno(t, "rmdir a file", unix.Rmdir(m.Path("a", "file")), unix.ENOTDIR)
	wantErrno(t, "unlink a directory", unix.Unlink(m.Path("a", "b")), unix.EISDIR)
	wantErrno(t, "unlink a missing name", unix.Unlink(m.Path("a", "nope")), unix.ENOENT)
	if err := unix.Rmdir(m.Path("a", "b", "c")); err != nil {
		t.Errorf("rmdir an empty dir: %v", err)
	}
	wantNames(t, m.Path("a"), "b", "file")
	var st unix.Stat_t
	unix.Stat(m.Path("a"), &st)
	if st.Nlink < 2 {
		t.Errorf("directory nlink %d", st.Nlink)
	}
	// Many entries in one directory, then most of them removed.
	for i := 0; i < 300; i++ {
		mustWriteFile(t, m.Path("a", "b", "n"+strconv.Itoa(i)), []byte(strconv.Itoa(i)))
	}
	for i := 0; i < 300; i += 3 {
		if err := os.Remove(m.Path("a", "b", "n"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(listDir(t, m.Path("a", "b"))); n != 200 {
		t.Errorf("%d entries after removing 100 of 300", n)
	}
	m = m.remount()
	if n := len(listDir(t, m.Path("a", "b"))); n != 200 {
		t.Errorf("%d entries after remount, want 200", n)
	}
	wantContent(t, m.Path("a", "b", "n299"), []byte("299"))
	if _, err := os.Stat(m.Path("a", "b", "c")); !os.IsNotExist(err) {
		t.Errorf("removed dir back after remount: %v", err)
	}
	m.finish()
}

func TestNameTooLong(t *testing.T) {
	m := freshMount(t, "64M")
	long := strings.Repeat("n", 256)
	_, err := os.Create(m.Path(long))
	wantErrno(t, "create a 256-byte name", err, unix.ENAMETOOLONG)
	wantErrno(t, "mkdir a 256-byte name", os.Mkdir(m.Path(long), 0o755), unix.ENAMETOOLONG)
	wantErrno(t, "symlink a 256-byte name", os.Symlink("x", m.Path(long)), unix.ENAMETOOLONG)
	ok := strings.Repeat("é", 127) + "x" // 255 bytes
	mustWriteFile(t, m.Path(ok), []byte("fits"))
	wantErrno(t, "rename to a 256-byte name", os.Rename(m.Path(ok), m.Path(long)), unix.ENAMETOOLONG)
	m = m.remount()
	wantContent(t, m.Path(ok), []byte("fits"))
	m.finish()
}

func TestRename(t *testing.T) {
	m := freshMount(t, "64M")
	mustWriteFile(t, m.Path("a"), []byte("A"))
	mustWriteFile(t, m.Path("b"), []byte("B"))
	os.MkdirAll(m.Path("d1", "sub"), 0o755)
	os.MkdirAll(m.Path("d2"), 0o755)
	mustWriteFile(t, m.Path("d2", "x"), []byte("X"))

	// Plain rename over an existing file replaces it.
	if err := os.Rename(m.Path("a"), m.Path("b")); err != nil {
		t.Fatal(err)
	}
	wantContent(t, m.Path("b"), []byte("A"))
	wantNames(t, m.Dir, "b", "d1", "d2")
	// Across directories.
	if err := os.Rename(m.Path("b"), m.Path("d1", "sub", "b2")); err != nil {
		t.Fatal(err)
	}
	wantContent(t, m.Path("d1", "sub", "b2"), []byte("A"))
	// Errors (unix.Rename: os.Rename answers EEXIST itself when the
	// target is a directory, without asking the filesystem).
	wantErrno(t, "rename a dir into its own subtree", unix.Rename(m.Path("d1"), m.Path("d1", "sub", "d1")), unix.EINVAL)
	// POSIX allows either errno here.
	wantErrnoIn(t, "rename a dir over a non-empty dir", unix.Rename(m.Path("d1"), m.Path("d2")), unix.ENOTEMPTY, unix.EEXIST)
	wantErrno(t, "rename a file over a dir", unix.Rename(m.Path("d2", "x"), m.Path("d1")), unix.EISDIR)
	wantErrno(t, "rename a dir over a file", unix.Rename(m.Path("d1"), m.Path("d2", "x")), unix.ENOTDIR)
	wantErrno(t, "rename a missing name", unix.Rename(m.Path("zz"), m.Path("yy")), unix.ENOENT)

	// renameat2 RENAME_NOREPLACE.
	mustWriteFile(t, m.Path("p"), []byte("P"))
	mustWriteFile(t, m.Path("q"), []byte("Q"))
	err := unix.Renameat2(unix.AT_FDCWD, m.Path("p"), unix.AT_FDCWD, m.Path("q"), unix.RENAME_NOREPLACE)
	wantErrno(t, "RENAME_NOREPLACE onto an existing name", err, unix.EEXIST)
	if err := unix.Renameat2(unix.AT_FDCWD, m.Path("p"), unix.AT_FDCWD, m.Path("r"), unix.RENAME_NOREPLACE); err != nil {
		t.Errorf("RENAME_NOREPLACE to a free name: %v", err)
	}
	// RENAME_EXCHANGE swaps a file and a directory.
	if err := unix.Renameat2(unix.AT_FDCWD, m.Path("q"), unix.AT_FDCWD, m.Path("d2"), unix.RENAME_EXCHANGE); err != nil {
		t.Errorf("RENAME_EXCHANGE: %v", err)
	}
	wantContent(t, m.Path("d2"), []byte("Q"))
	wantContent(t, m.Path("q", "x"), []byte("X"))
	err = unix.Renameat2(unix.AT_FDCWD, m.Path("r"), unix.AT_FDCWD, m.Path("none"), unix.RENAME_EXCHANGE)
	wantErrno(t, "RENAME_EXCHANGE with a missing target", err, unix.ENOENT)
	err = unix.Renameat2(unix.AT_FDCWD, m.Path("r"), unix.AT_FDCWD, m.Path("s"), unix.RENAME_WHITEOUT)
	wantErrno(t, "RENAME_WHITEOUT", err, unix.EINVAL)

	m = m.remount()
	wantNames(t, m.Dir, "d1", "d2", "q", "r")
	wantContent(t, m.Path("d2"), []byte("Q"))
	wantContent(t, m.Path("q", "x"), []byte("X"))
	wantContent(t, m.Path("r"), []byte("P"))
	wantContent(t, m.Path("d1", "sub", "b2"), []byte("A"))
	m.finish()
}

func TestSymlinkAndHardLink(t *testing.T) {
	m := freshMount(t, "64M")
	mustWriteFile(t, m.Path("target"), []byte("T"))
	for name, target := range map[string]string{"rel": "target", "abs": "/etc/passwd", "dangling": "no/such", "dotdot": "../x/y"} {
		if err := os.Symlink(target, m.Path(name)); err != nil {
			t.Fatalf("symlink %s: %v", name, err)
		}
	}
	wantContent(t, m.Path("rel"), []byte("T"))
	_, err := os.Readlink(m.Path("target"))
	wantErrno(t, "readlink a regular file", err, unix.EINVAL)
	wantErrno(t, "symlink over an existing name", os.Symlink("x", m.Path("rel")), unix.EEXIST)

	// Hard links share content and count.
	if err := os.Link(m.Path("target"), m.Path("link2")); err != nil {
		t.Fatalf("link: %v", err)
	}
	var st unix.Stat_t
	unix.Stat(m.Path("target"), &st)
	if st.Nlink != 2 {
		t.Errorf("nlink after link: %d, want 2", st.Nlink)
	}
	var st2 unix.Stat_t
	unix.Stat(m.Path("link2"), &st2)
	if st2.Ino != st.Ino {
		t.Errorf("hard links have inodes %d and %d", st.Ino, st2.Ino)
	}
	f, _ := os.OpenFile(m.Path("link2"), os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte("+"))
	f.Close()
	wantContent(t, m.Path("target"), []byte("T+"))
	wantErrno(t, "link over an existing name", os.Link(m.Path("target"), m.Path("rel")), unix.EEXIST)
	os.Mkdir(m.Path("dir"), 0o755)
	wantErrno(t, "hard link to a directory", os.Link(m.Path("dir"), m.Path("dirlink")), unix.EPERM)

	m = m.remount()
	for name, target := range map[string]string{"rel": "target", "abs": "/etc/passwd", "dangling": "no/such", "dotdot": "../x/y"} {
		if got, err := os.Readlink(m.Path(name)); err != nil || got != target {
			t.Errorf("readlink %s after remount: %q, %v; want %q", name, got, err, target)
		}
	}
	unix.Stat(m.Path("link2"), &st)
	if st.Nlink != 2 {
		t.Errorf("nlink after remount: %d, want 2", st.Nlink)
	}
	os.Remove(m.Path("target"))
	unix.Stat(m.Path("link2"), &st)
	if st.Nlink != 1 {
		t.Errorf("nlink after unlinking one name: %d, want 1", st.Nlink)
	}
	wantContent(t, m.Path("link2"), []byte("T+"))
	m = m.remount()
	wantContent(t, m.Path("link2"), []byte("T+"))
	m.finish()
}

// TestUnlinkOpenFile: an unlinked file stays readable and writable through
// an fd that was open before, and its space is gone once it is closed.
func TestUnlinkOpenFile(t *testing.T) {
	m := freshMount(t, "64M")
	data := randBytes(5, 200000)
	mustWriteFile(t, m.Path("u"), data)
	f, err := os.OpenFile(m.Path("u"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m.Path("u")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.Path("u")); !os.IsNotExist(err) {
		t.Errorf("stat after unlink: %v", err)
	}
	buf := make([]byte, len(data))
	if n, err := f.ReadAt(buf, 0); n != len(data) || string(buf) != string(data) {
		t.Errorf("read of an unlinked open file: %d bytes, %v", n, err)
	}
	if _, err := f.WriteAt([]byte("still"), 0); err != nil {
		t.Errorf("write to an unlinked open file: %v", err)
	}
	copy(data, "still")
	// Every data operation on the open fd keeps working after the unlink.
	fd := int(f.Fd())
	if err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 0, 300000); err != nil {
		t.Errorf("fallocate KEEP_SIZE on an unlinked open file: %v", err)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 8192, 8192); err != nil {
		t.Errorf("punch hole on an unlinked open file: %v", err)
	} else {
		clear(data[8192:16384])
	}
	if err := f.Truncate(150000); err != nil {
		t.Errorf("ftruncate of an unlinked open file: %v", err)
	}
	data = data[:150000]
	if err := f.Sync(); err != nil {
		t.Errorf("fsync of an unlinked open file: %v", err)
	}
	got := make([]byte, 200000)
	n, _ := f.ReadAt(got, 0)
	if !bytes.Equal(got[:n], data) {
		t.Errorf("unlinked open file reads %d bytes, want %d, first difference at %d", n, len(data), firstDiff(got[:n], data))
	}
	f.Close()
	wantNames(t, m.Dir)
	m.finish()
}

func TestXattrs(t *testing.T) {
	m := freshMount(t, "64M")
	p := m.Path("x")
	mustWriteFile(t, p, []byte("x"))
	os.Mkdir(m.Path("d"), 0o755)
	buf := make([]byte, 4096)
	_, err := unix.Getxattr(p, "user.none", buf)
	wantErrno(t, "getxattr of an absent name", err, unix.ENODATA)
	wantErrno(t, "removexattr of an absent name", unix.Removexattr(p, "user.none"), unix.ENODATA)
	big := randBytes(9, 2000)
	for _, target := range []string{p, m.Path("d")} {
		if err := unix.Setxattr(target, "user.one", []byte("1"), 0); err != nil {
			t.Fatalf("setxattr on %s: %v", target, err)
		}
		if err := unix.Setxattr(target, "user.big", big, 0); err != nil {
			t.Errorf("setxattr 2000 bytes: %v", err)
		}
		if err := unix.Setxattr(target, "user.empty", nil, 0); err != nil {
			t.Errorf("setxattr empty value: %v", err)
		}
	}
	wantErrno(t, "XATTR_CREATE on an existing name", unix.Setxattr(p, "user.one", []byte("2"), unix.XATTR_CREATE), unix.EEXIST)
	wantErrno(t, "XATTR_REPLACE on an absent name", unix.Setxattr(p, "user.two", []byte("2"), unix.XATTR_REPLACE), unix.ENODATA)
	if err := unix.Setxattr(p, "user.one", []byte("uno"), unix.XATTR_REPLACE); err != nil {
		t.Errorf("XATTR_REPLACE: %v", err)
	}
	_, err = unix.Getxattr(p, "user.big", make([]byte, 10))
	wantErrno(t, "getxattr into a small buffer", err, unix.ERANGE)
	check := func(p string, one string) {
		t.Helper()
		n, err := unix.Getxattr(p, "user.one", buf)
		if err != nil || string(buf[:n]) != one {
			t.Errorf("getxattr user.one on %s: %q, %v; want %q", p, buf[:n], err, one)
		}
		n, err = unix.Getxattr(p, "user.big", buf)
		if err != nil || string(buf[:n]) != string(big) {
			t.Errorf("getxattr user.big on %s: %d bytes, %v", p, n, err)
		}
		if sz, err := unix.Getxattr(p, "user.big", nil); err != nil || sz != len(big) {
			t.Errorf("getxattr size query: %d, %v", sz, err)
		}
		n, err = unix.Listxattr(p, buf)
		if err != nil {
			t.Errorf("listxattr on %s: %v", p, err)
			return
		}
		var names []string
		for _, s := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
			if strings.HasPrefix(s, "user.") {
				names = append(names, s)
			}
		}
		sort.Strings(names)
		if strings.Join(names, ",") != "user.big,user.empty,user.one" {
			t.Errorf("listxattr on %s: %q", p, names)
		}
	}
	check(p, "uno")
	check(m.Path("d"), "1")
	m = m.remount()
	check(m.Path("x"), "uno")
	check(m.Path("d"), "1")
	if err := unix.Removexattr(m.Path("x"), "user.one"); err != nil {
		t.Errorf("removexattr: %v", err)
	}
	_, err = unix.Getxattr(m.Path("x"), "user.one", buf)
	wantErrno(t, "getxattr after removexattr", err, unix.ENODATA)
	m = m.remount()
	_, err = unix.Getxattr(m.Path("x"), "user.one", buf)
	wantErrno(t, "getxattr after removexattr and remount", err, unix.ENODATA)
	m.finish()
}
