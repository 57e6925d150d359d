package main

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseMountOptions(t *testing.T) {
	def := defaultMountOptions()
	cases := []struct {
		in      string
		want    func(o *mountOptions)
		wantErr string
	}{
		{"", func(o *mountOptions) {}, ""},
		{"ro", func(o *mountOptions) { o.ReadOnly = true }, ""},
		{"ro,rw", func(o *mountOptions) {}, ""},
		{"uid=1000,gid=100,umask=077", func(o *mountOptions) { o.UID, o.GID, o.Umask = 1000, 100, 0o077 }, ""},
		{"allow_other,default_permissions,ignore_chmod,debug,stats", func(o *mountOptions) {
			o.AllowOther, o.DefaultPermissions, o.IgnoreChmod, o.Debug, o.Stats = true, true, true, true, true
		}, ""},
		{"strict_chmod", func(o *mountOptions) { o.IgnoreChmod = false }, ""},
		{"strict_chmod,ignore_chmod", func(o *mountOptions) {}, ""},
		{"allow_other", func(o *mountOptions) { o.AllowOther, o.DefaultPermissions = true, true }, ""},
		{"allow_other,no_default_permissions", func(o *mountOptions) { o.AllowOther, o.NoDefaultPermissions = true, true }, ""},
		{"no_default_permissions,default_permissions", func(o *mountOptions) { o.DefaultPermissions = true }, ""},
		{"writeback_cache", func(o *mountOptions) { o.WritebackCache = true }, ""},
		{"writeback_cache,no_writeback_cache", func(o *mountOptions) {}, ""},
		{"cache_size=512M,io=sync", func(o *mountOptions) { o.CacheSize, o.IO = 512<<20, "sync" }, ""},
		{"partition=boot", func(o *mountOptions) { o.Partition = "boot" }, ""},
		{"partition=1048576", func(o *mountOptions) { o.Partition = "1048576" }, ""},
		{"fsname=vm-disk", func(o *mountOptions) { o.FsName = "vm-disk" }, ""},
		{"log=/var/log/tfs.log", func(o *mountOptions) { o.LogFile = "/var/log/tfs.log" }, ""},
		{"log=", nil, "log needs"},
		{"defaults,noatime,nodev,nosuid,_netdev,nofail,user,context=\"system_u:object_r:tmp_t:s0:c1,c2\",x-systemd.automount",
			func(o *mountOptions) {}, ""},
		{"frobnicate,size=3", func(o *mountOptions) { o.Warnings = []string{"frobnicate", "size=3"} }, ""},
		{"uid=bob", nil, "uid=bob"},
		{"umask=999", nil, "umask=999"},
		{"cache_size=12Q", nil, "cache_size=12Q"},
		{"nbd_timeout=2.5", func(o *mountOptions) { o.NBDTimeout = 2500 * time.Millisecond }, ""},
		{"nbd_timeout=0", nil, "nbd_timeout=0"},
		{"nbd_timeout", nil, "want seconds"},
		{"cache_size=4K", nil, "at least 1M"},
		{"io=epoll", nil, "io=epoll"},
		{"fuse_uring=on", func(o *mountOptions) { o.FuseURing = "on" }, ""},
		{"fuse_uring=auto", func(o *mountOptions) { o.FuseURing = "auto" }, ""},
		{"fuse_uring=yes", nil, "want auto, on or off"},
		{"partition=middle", nil, "partition=middle"},
	}
	for _, c := range cases {
		o := defaultMountOptions()
		err := parseMountOptions(c.in, &o)
		o.finish()
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%q: error %v, want one mentioning %q", c.in, err, c.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		want := def
		c.want(&want)
		if !reflect.DeepEqual(o, want) {
			t.Errorf("%q:\n got %+v\nwant %+v", c.in, o, want)
		}
	}
}

// TestOpenToAll: only allow_other with an explicit no_default_permissions
// lets everyone in unchecked, and that is what the warning is for.
func TestOpenToAll(t *testing.T) {
	for in, want := range map[string]bool{
		"": false, "allow_other": false, "allow_other,default_permissions": false,
		"allow_other,no_default_permissions": true, "no_default_permissions": false,
		"allow_other,no_default_permissions,default_permissions": false,
	} {
		o := defaultMountOptions()
		if err := parseMountOptions(in, &o); err != nil {
			t.Fatal(err)
		}
		o.finish()
		if o.openToAll() != want {
			t.Errorf("%q: openToAll %v, want %v", in, o.openToAll(), want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "4096": 4096, "64M": 64 << 20, "64MiB": 64 << 20, "1G": 1 << 30, "2g": 2 << 30,
		"10K": 10 << 10, "1T": 1 << 40, "512B": 512,
	} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1", "1.5G", "12Q", "99999999999T"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestParseMountArgs(t *testing.T) {
	cases := []struct {
		args   []string
		helper bool
		check  func(a mountArgs) bool
		errHas string
	}{
		{[]string{"img", "/mnt"}, false, func(a mountArgs) bool {
			return !a.foreground && a.image == "img" && a.dir == "/mnt" && a.opts.FsName == "img"
		}, ""},
		{[]string{"-f", "-o", "ro,uid=7", "./x.img", "/mnt"}, false, func(a mountArgs) bool {
			return a.foreground && a.opts.ReadOnly && a.opts.UID == 7 && a.opts.FsName == "./x.img"
		}, ""},
		// mount.fuse3 puts the options after the operands.
		{[]string{"img", "/mnt", "-o", "allow_other", "-oumask=077"}, false, func(a mountArgs) bool {
			return a.opts.AllowOther && a.opts.Umask == 0o077
		}, ""},
		// mount(8) helper: -f is "fake", -n -s -v and -t TYPE are accepted.
		{[]string{"img", "/mnt", "-n", "-s", "-v", "-t", "fuse.tfsmount", "-o", "rw"}, true, func(a mountArgs) bool {
			return !a.fake && !a.foreground && a.image == "img"
		}, ""},
		{[]string{"-f", "img", "/mnt"}, true, func(a mountArgs) bool { return a.fake }, ""},
		{[]string{"img"}, false, nil, "IMAGE and MOUNTPOINT"},
		{[]string{"a", "b", "c"}, false, nil, "IMAGE and MOUNTPOINT"},
		{[]string{"-x", "a", "b"}, false, nil, "unknown flag"},
		{[]string{"a", "b", "-o"}, false, nil, "-o needs"},
		{[]string{"a", "b", "-o", "io=nope"}, false, nil, "io=nope"},
	}
	for _, c := range cases {
		a, err := parseMountArgs(c.args, c.helper)
		if c.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), c.errHas) {
				t.Errorf("%q: error %v, want %q", c.args, err, c.errHas)
			}
			continue
		}
		if err != nil || !c.check(a) {
			t.Errorf("%q (helper %v): got %+v, %v", c.args, c.helper, a, err)
		}
	}
}

func TestSplitOptionsKeepsQuotedCommas(t *testing.T) {
	got := splitOptions(`ro,context="a:b:c,d",,uid=1`)
	want := []string{"ro", `context="a:b:c,d"`, "uid=1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("splitOptions = %q, want %q", got, want)
	}
}

func TestStripTypeFlag(t *testing.T) {
	got := stripTypeFlag([]string{"-f", "-t", "fuse.tfsmount", "img", "-tfuse", "/mnt"})
	want := []string{"-f", "img", "/mnt"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stripTypeFlag = %q, want %q", got, want)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/srv/vm.img`:         "/srv/vm.img",
		`/srv/my\040disk.img`: "/srv/my disk.img",
		`a\134b`:              `a\b`,
		`trailing\04`:         `trailing\04`,
		`\011tab\012newline`:  "\ttab\nnewline",
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRemountFlags remounts a tmpfs (standing in for a FUSE mount: the
// remount path only touches the kernel's per-mount flags) and reads the
// flags back from /proc/self/mountinfo.
func TestRemountFlags(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	flags, ok := mountFlags(dir)
	if !ok || flags&(unix.MS_NOSUID|unix.MS_NODEV) != unix.MS_NOSUID|unix.MS_NODEV || flags&unix.MS_RDONLY != 0 {
		t.Fatalf("flags of a fresh nosuid,nodev mount: %#x, found %v", flags, ok)
	}
	a, err := parseMountArgs([]string{"tmpfs", dir, "-o", "remount,ro,noexec"}, true)
	if err != nil || !a.opts.Remount {
		t.Fatalf("parse: %+v, %v", a.opts, err)
	}
	if code := remount(a); code != exitOK {
		t.Fatalf("remount: exit %d", code)
	}
	flags, _ = mountFlags(dir)
	want := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_RDONLY | unix.MS_NOEXEC)
	if flags&want != want {
		t.Errorf("after remount,ro,noexec: flags %#x, want %#x set", flags, want)
	}
	if _, ok := mountFlags(dir + "/not-a-mount"); ok {
		t.Error("found a mount on a path that is none")
	}
}
