package fusefs

import (
	"errors"
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
	for _, ns := range []string{"trusted.x", "security.x", "system.x"} {
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
	if strings.Join(names, ",") != "user.one,user.two" {
		t.Errorf("listxattr: %q", names)
	}
	if err := unix.Removexattr(p, "user.one"); err != nil {
		t.Errorf("removexattr: %v", err)
	}
	if _, err := unix.Getxattr(p, "user.one", buf); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("getxattr after remove: %v, want ENODATA", err)
	}
}
