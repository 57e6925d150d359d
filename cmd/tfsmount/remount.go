package main

import (
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// remount changes the flags of the existing mount on a.dir ('mount -o
// remount,...'), which mount(8) sends to the helper like a new mount. Only
// the kernel's per-mount flags change (ro, noexec, noatime...); the daemon
// keeps serving. A mount made read-only at start stays read-only inside:
// remounting it rw lets writes reach the daemon, which refuses them
// (EROFS).
func remount(a mountArgs) int {
	dir, err := filepath.Abs(a.dir)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	cur, ok := mountFlags(dir)
	if !ok {
		return fail(exitMountFail, "remount: nothing is mounted on %s", a.dir)
	}
	// Start from the mount's flags, then apply what the options ask.
	flags := cur
	for _, l := range a.optList {
		for _, opt := range splitOptions(l) {
			if f, ok := vfsFlags[opt]; ok {
				flags = flags&^f.clear | f.set
			}
		}
	}
	if err := unix.Mount("", dir, "", flags|unix.MS_REMOUNT, ""); err != nil {
		return fail(exitMountFail, "remount %s: %v", a.dir, err)
	}
	return exitOK
}

// mountFlags returns the mount(2) flags of the mount on dir, from the
// per-mount options of /proc/self/mountinfo.
func mountFlags(dir string) (uintptr, bool) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return 0, false
	}
	var flags uintptr
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		// 36 35 98:0 /root /mnt rw,noatime master:1 - fuse /img rw,...
		if len(f) < 6 || unescapeMountinfo(f[4]) != dir {
			continue
		}
		// The last mount on dir is the visible one.
		found, flags = true, 0
		for _, opt := range strings.Split(f[5], ",") {
			if c, ok := vfsFlags[opt]; ok {
				flags = flags&^c.clear | c.set
			}
		}
	}
	return flags, found
}
