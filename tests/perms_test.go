package tests

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/xattr"
)

// otherUser is the unprivileged user the permission tests act as (like
// xfstests' fsgqa); the test set-up creates it if it is missing.
const otherUser = "tfsmount-other"

// ensureOtherUser returns the uid and gid of otherUser, creating it.
func ensureOtherUser(t *testing.T) (uint32, uint32) {
	t.Helper()
	if _, err := exec.Command("id", "-u", otherUser).Output(); err != nil {
		out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", otherUser).CombinedOutput()
		if err != nil {
			t.Fatalf("useradd %s: %v: %s", otherUser, err, out)
		}
	}
	id := func(flag string) uint32 {
		out, err := exec.Command("id", flag, otherUser).Output()
		if err != nil {
			t.Fatalf("id %s %s: %v", flag, otherUser, err)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		return uint32(n)
	}
	return id("-u"), id("-g")
}

// asUser runs a shell command as uid:gid and returns its combined output
// and error.
func asUser(uid, gid uint32, script string) (string, error) {
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// openMountDir is a mount point every user can reach (t.TempDir is 0700).
func openMountDir(t *testing.T) string {
	t.Helper()
	base, err := os.MkdirTemp("/var/tmp", "tfsperm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	dir := filepath.Join(base, "mnt")
	for _, d := range []string{base, dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestAllowOtherEnforcesModes: with allow_other alone, another user can
// read what the shown modes let others read and nothing more: no writing
// root's 0644 file, no creating, renaming or removing in root's 0755
// directory. With no_default_permissions a warning says everything is open,
// and it is.
func TestAllowOtherEnforcesModes(t *testing.T) {
	requireFUSE(t)
	uid, gid := ensureOtherUser(t)
	img := newImage(t, "64M")
	dir := openMountDir(t)
	m := mountAt(t, img, dir, "allow_other")
	if err := os.WriteFile(m.Path("rootfile"), []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(m.Path("rootdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(m.Path("rootfile"))
	if err != nil || st.Mode().Perm() != 0o644 || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("rootfile shows %v, %v; want -rw-r--r-- root", st.Mode(), err)
	}
	if out, err := asUser(uid, gid, "cat "+m.Path("rootfile")); err != nil || out != "secret\n" {
		t.Fatalf("another user cannot read a 0644 file: %v %q", err, out)
	}
	if out, err := asUser(uid, gid, "ls "+m.Path()); err != nil || !strings.Contains(out, "rootfile") {
		t.Fatalf("another user cannot list a 0755 directory: %v %q", err, out)
	}
	for _, script := range []string{
		"echo x >> " + m.Path("rootfile"),
		"echo x > " + m.Path("rootfile"),
		": > " + m.Path("newfile"),
		"mkdir " + m.Path("newdir"),
		"mkdir " + m.Path("rootdir", "sub"),
		"mv " + m.Path("rootfile") + " " + m.Path("moved"),
		"rm -f " + m.Path("rootfile"),
		"rmdir " + m.Path("rootdir"),
		"ln -s x " + m.Path("link"),
		"touch -d 2001-01-01 " + m.Path("rootfile"),
		"chmod 666 " + m.Path("rootfile"),
	} {
		out, err := asUser(uid, gid, script)
		if err == nil || !strings.Contains(out, "ermission denied") && !strings.Contains(out, "Operation not permitted") {
			t.Errorf("as %s, %q: %v %q; want EACCES or EPERM", otherUser, script, err, out)
		}
	}
	if b, err := os.ReadFile(m.Path("rootfile")); err != nil || string(b) != "secret\n" {
		t.Fatalf("rootfile changed: %q %v", b, err)
	}
	for _, p := range []string{"newfile", "newdir", "moved", "link"} {
		if _, err := os.Lstat(m.Path(p)); err == nil {
			t.Errorf("another user made %s", p)
		}
	}
	m.Unmount()
	requireFsckClean(t, img)

	// Owned by the other user (uid=, gid=): that user may write.
	m = mountAt(t, img, dir, "allow_other", fmt.Sprintf("uid=%d", uid), fmt.Sprintf("gid=%d", gid))
	if out, err := asUser(uid, gid, "echo mine > "+m.Path("userfile")+" && cat "+m.Path("userfile")); err != nil || out != "mine\n" {
		t.Fatalf("the owner shown cannot write: %v %q", err, out)
	}
	m.Unmount()
	requireFsckClean(t, img)

	// no_default_permissions: a warning, and the modes are only shown.
	m = mountAt(t, img, dir, "allow_other", "no_default_permissions")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(m.stderr.String(), "every user can read, change and delete every file") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning for allow_other,no_default_permissions; stderr:\n%s", m.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := asUser(uid, gid, "echo x >> "+m.Path("rootfile")); err != nil {
		t.Fatalf("with no_default_permissions another user could not append (then the warning is wrong): %v %q", err, out)
	}
	m.Unmount()
	requireFsckClean(t, img)
}

// copyTree is a source tree with the modes and owners TFS cannot hold.
func copyTree(t *testing.T, uid, gid uint32) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(filepath.Join(src, "sub", "deep"), 0o750); err != nil {
		t.Fatal(err)
	}
	for i, mode := range []os.FileMode{0o600, 0o640, 0o700, 0o750, 0o4755, 0o2755, 0o444, 0o1777} {
		p := filepath.Join(src, fmt.Sprintf("f%o", mode))
		if i%2 == 1 {
			p = filepath.Join(src, "sub", fmt.Sprintf("f%o", mode))
		}
		if err := os.WriteFile(p, []byte(fmt.Sprintf("content of %o\n%s", mode, strings.Repeat("x", i*3000))), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if err := os.Chown(p, int(uid), int(gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(src, "sub", "deep", "x"), []byte("deep\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "sub", "deep", "x"), filepath.Join(src, "hardlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/deep/x", filepath.Join(src, "symlink")); err != nil {
		t.Fatal(err)
	}
	if err := xattr.Set(filepath.Join(src, "f600"), "user.origin", []byte("copied")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(src, "sub"), int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	return src
}

// treeSums maps each regular file under root (by relative path) to the
// sha256 of its content.
func treeSums(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			out[rel] = fmt.Sprintf("%x", sha256.Sum256(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCopyInAnyModes: cp -a, rsync -a and rsync -aHAX of a tree with modes
// and owners TFS cannot store exit 0 and every file arrives (hard links and
// user xattrs with it); with strict_chmod the EPERM comes back.
func TestCopyInAnyModes(t *testing.T) {
	requireFUSE(t)
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Fatalf("rsync is required (make setup installs it): %v", err)
	}
	uid, gid := ensureOtherUser(t)
	src := copyTree(t, uid, gid)
	want := treeSums(t, src)
	img := newImage(t, "128M")
	m := mountImage(t, img)
	for _, c := range []struct {
		dst  string
		argv []string
	}{
		{"cp", []string{"cp", "-a", src, m.Path("cp")}},
		{"rsync", []string{"rsync", "-a", src + "/", m.Path("rsync") + "/"}},
		{"rsync-HAX", []string{"rsync", "-aHAX", src + "/", m.Path("rsync-HAX") + "/"}},
	} {
		out, err := exec.Command(c.argv[0], c.argv[1:]...).CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", strings.Join(c.argv, " "), err, out)
			continue
		}
		got := treeSums(t, m.Path(c.dst))
		if len(got) != len(want) {
			t.Errorf("%s: %d files arrived, want %d", c.argv[0], len(got), len(want))
		}
		for rel, sum := range want {
			if got[rel] != sum {
				t.Errorf("%s: %s arrived wrong or not at all", strings.Join(c.argv, " "), rel)
			}
		}
		if v, err := xattr.Get(m.Path(c.dst, "f600"), "user.origin"); c.dst != "rsync" && (err != nil || string(v) != "copied") {
			t.Errorf("%s: user xattr %q, %v", c.argv[0], v, err)
		}
		if st, err := os.Stat(m.Path(c.dst, "f4755")); err != nil || st.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s: f4755 lost its exec bit: %v %v", c.argv[0], st.Mode(), err)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(m.Path("rsync-HAX", "hardlink"), &st); err != nil || st.Nlink != 2 {
		t.Errorf("rsync -H: hardlink has %d links, %v", st.Nlink, err)
	}
	m.Unmount()
	requireFsckClean(t, img)

	// strict_chmod: what TFS cannot store is refused, as before.
	m = mountImage(t, img, "strict_chmod")
	out, err := exec.Command("rsync", "-a", src+"/", m.Path("strict")+"/").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Operation not permitted") {
		t.Errorf("rsync -a with strict_chmod: %v\n%s\nwant EPERM and a non-zero exit", err, out)
	}
	if err := os.Chmod(m.Path("cp", "f600"), 0o600); err == nil {
		t.Errorf("chmod 600 with strict_chmod succeeded")
	}
	m.Unmount()
	requireFsckClean(t, img)
}

// TestPrivilegedXattrs: root stores trusted.* and security.* attributes,
// which survive a remount; another user can neither set a trusted.* one
// nor see one listed, and still reads the user.* and security.* ones.
func TestPrivilegedXattrs(t *testing.T) {
	requireFUSE(t)
	uid, gid := ensureOtherUser(t)
	img := newImage(t, "64M")
	dir := openMountDir(t)
	m := mountAt(t, img, dir, "allow_other")
	f := m.Path("f")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"trusted.t", "security.s", "user.u"} {
		if err := xattr.Set(f, name, []byte("v:"+name)); err != nil {
			t.Fatalf("root sets %s: %v", name, err)
		}
	}
	m = m.remount()
	f = m.Path("f")
	for _, name := range []string{"trusted.t", "security.s", "user.u"} {
		if v, err := xattr.Get(f, name); err != nil || string(v) != "v:"+name {
			t.Errorf("%s after a remount: %q, %v", name, v, err)
		}
	}
	out, err := asUser(uid, gid, "getfattr -d -m - "+f)
	if err != nil || strings.Contains(out, "trusted.t") || !strings.Contains(out, "user.u") || !strings.Contains(out, "security.s") {
		t.Errorf("another user lists: %v\n%s\nwant user.u and security.s, not trusted.t", err, out)
	}
	if out, err := asUser(uid, gid, "setfattr -n trusted.other -v 1 "+f); err == nil {
		t.Errorf("another user set a trusted.* attribute: %s", out)
	}
	m.finish()
}
