package fusefs

import (
	"encoding/binary"
	"errors"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestUserXattrs(t *testing.T) {
	v := newTestVolume(t, Config{})
	p := v.path("f")
	if err := unix.Mknod(p, unix.S_IFREG|0o644, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(p, "user.one", []byte("1"), 0); err != nil {
		t.Fatalf("setxattr: %v", err)
	}
	if err := unix.Setxattr(p, "user.two", []byte("second value"), unix.XATTR_CREATE); err != nil {
		t.Fatalf("setxattr XATTR_CREATE: %v", err)
	}
	if err := unix.Setxattr(p, "user.two", []byte("x"), unix.XATTR_CREATE); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("XATTR_CREATE on an existing name: %v, want EEXIST", err)
	}
	if err := unix.Setxattr(p, "user.none", []byte("x"), unix.XATTR_REPLACE); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("XATTR_REPLACE on a missing name: %v, want ENODATA", err)
	}
	// trusted.* and security.* are stored for root (the kernel keeps
	// others out); system.* other than ACLs, and no namespace, are not.
	for _, ns := range []string{"trusted.x", "security.x"} {
		if err := unix.Setxattr(p, ns, []byte("v-"+ns), 0); err != nil {
			t.Errorf("setxattr %s as root: %v", ns, err)
		}
	}
	for _, ns := range []string{"system.x", "other.x"} {
		if err := unix.Setxattr(p, ns, []byte("v"), 0); !errors.Is(err, syscall.EOPNOTSUPP) {
			t.Errorf("setxattr %s: %v, want EOPNOTSUPP", ns, err)
		}
	}
	v.remount(Config{})
	p = v.path("f")
	size, err := unix.Getxattr(p, "user.two", nil)
	if err != nil || size != len("second value") {
		t.Errorf("getxattr size query: %d, %v", size, err)
	}
	if _, err := unix.Getxattr(p, "user.two", make([]byte, 3)); !errors.Is(err, syscall.ERANGE) {
		t.Errorf("getxattr into a short buffer: %v, want ERANGE", err)
	}
	buf := make([]byte, 64)
	n, err := unix.Getxattr(p, "user.two", buf)
	if err != nil || string(buf[:n]) != "second value" {
		t.Errorf("getxattr: %q, %v", buf[:n], err)
	}
	n, err = unix.Listxattr(p, buf)
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
	sort.Strings(names)
	if strings.Join(names, ",") != "security.x,trusted.x,user.one,user.two" {
		t.Errorf("listxattr: %q", names)
	}
	for _, ns := range []string{"trusted.x", "security.x"} {
		if n, err := unix.Getxattr(p, ns, buf); err != nil || string(buf[:n]) != "v-"+ns {
			t.Errorf("getxattr %s after a remount: %q, %v", ns, buf[:n], err)
		}
	}
	if err := unix.Removexattr(p, "user.one"); err != nil {
		t.Errorf("removexattr: %v", err)
	}
	if _, err := unix.Getxattr(p, "user.one", buf); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("getxattr after remove: %v, want ENODATA", err)
	}
}

// TestMinimalACLIsChmod: an access ACL that only restates a mode, as cp -a
// sets on every file it copies, works as a chmod; a real ACL is refused
// with EOPNOTSUPP, so tools know ACLs are not kept.
func TestMinimalACLIsChmod(t *testing.T) {
	v := newTestVolume(t, Config{IgnoreChmod: true})
	p := v.path("f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	acl := func(entries ...[3]uint32) []byte {
		b := binary.LittleEndian.AppendUint32(nil, 2)
		for _, e := range entries {
			b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
			b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
			b = binary.LittleEndian.AppendUint32(b, e[2])
		}
		return b
	}
	const none = 0xffffffff
	// rwx r-x r-x: the exec flag (shown as 0777 with umask 0).
	if err := unix.Setxattr(p, "system.posix_acl_access", acl([3]uint32{1, 7, none}, [3]uint32{4, 5, none}, [3]uint32{0x20, 5, none}), 0); err != nil {
		t.Fatalf("minimal ACL: %v", err)
	}
	if st := stat(t, p); st.Mode&0o777 != 0o777 {
		t.Errorf("mode after a minimal ACL of 0755: %o, want 0777", st.Mode&0o777)
	}
	// r-- r-- r--: readonly.
	if err := unix.Setxattr(p, "system.posix_acl_access", acl([3]uint32{1, 4, none}, [3]uint32{4, 4, none}, [3]uint32{0x20, 4, none}), 0); err != nil {
		t.Fatalf("minimal ACL: %v", err)
	}
	if st := stat(t, p); st.Mode&0o777 != 0o444 {
		t.Errorf("mode after a minimal ACL of 0444: %o", st.Mode&0o777)
	}
	// A named user's entry is a real ACL.
	real := acl([3]uint32{1, 6, none}, [3]uint32{2, 6, 1000}, [3]uint32{4, 4, none}, [3]uint32{0x10, 6, none}, [3]uint32{0x20, 4, none})
	if err := unix.Setxattr(p, "system.posix_acl_access", real, 0); err != unix.EOPNOTSUPP {
		t.Errorf("a real ACL: %v, want EOPNOTSUPP", err)
	}
	// Removing an ACL leaves what there is: the mode.
	if err := os.Mkdir(v.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Removexattr(v.path("d"), "system.posix_acl_default"); err != nil {
		t.Errorf("removing a directory's default ACL: %v", err)
	}
	v.remount(Config{IgnoreChmod: true})
	if st := stat(t, v.path("f")); st.Mode&0o777 != 0o444 {
		t.Errorf("mode after remount: %o, want 0444", st.Mode&0o777)
	}
}
