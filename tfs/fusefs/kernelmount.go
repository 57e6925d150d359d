package fusefs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Server is a mounted file system being served.
type Server struct {
	*fuse.Server
	dir string
	// ownMount is true when Mount made the kernel mount itself; then
	// go-fuse does not know the mount point and cannot unmount it.
	ownMount bool
	// ring is the io_uring transport, nil when requests come through
	// /dev/fuse only.
	ring *fuseRing
}

// Wait returns once the file system is unmounted and every request has
// been answered.
func (s *Server) Wait() {
	s.Server.Wait()
	if s.ring != nil {
		s.ring.stop()
	}
}

// URingRequests is how many requests came over io_uring, and whether the
// mount takes them that way at all.
func (s *Server) URingRequests() (int64, bool) {
	if s.ring == nil {
		return 0, false
	}
	return s.ring.served.Load(), true
}

// Unmount unmounts the file system; Wait returns after that. A busy mount
// is retried for a moment and then reported (EBUSY).
func (s *Server) Unmount() error {
	if !s.ownMount {
		return s.Server.Unmount()
	}
	var err error
	delay := 5 * time.Millisecond
	for try := 0; try < 5; try++ {
		if err = syscall.Unmount(s.dir, 0); err == nil || err == syscall.EINVAL {
			// EINVAL: not mounted (any more).
			return nil
		}
		time.Sleep(delay)
		delay *= 2
	}
	return fmt.Errorf("unmount %s: %w", s.dir, err)
}

// mountKernel opens /dev/fuse and mounts it on dir with mount(2), as
// fusermount3 would but with file system type "fuse" and no subtype. It
// returns the /dev/fuse descriptor.
func mountKernel(dir string, o *fuse.MountOptions) (int, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return -1, err
	}
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/fuse: %w", err)
	}
	// The kernel's fuse mount data: only these keys and a few generic
	// ones are understood; ro/nosuid/nodev are flags, not strings.
	data := []string{
		fmt.Sprintf("fd=%d", fd),
		fmt.Sprintf("rootmode=%o", st.Mode&syscall.S_IFMT),
		fmt.Sprintf("user_id=%d", os.Geteuid()),
		fmt.Sprintf("group_id=%d", os.Getegid()),
		fmt.Sprintf("max_read=%d", o.MaxWrite),
	}
	flags := uintptr(syscall.MS_NOSUID | syscall.MS_NODEV)
	for _, opt := range o.Options {
		if opt == "ro" {
			flags |= syscall.MS_RDONLY
		} else {
			data = append(data, opt)
		}
	}
	if o.AllowOther {
		data = append(data, "allow_other")
	}
	if err := syscall.Mount(o.FsName, dir, "fuse", flags, strings.Join(data, ",")); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// disablePoll makes the kernel ask for POLL once, which go-fuse answers
// with ENOSYS, so the kernel never sends it again. Without this, the Go
// runtime's epoll registration of a file on the mount, made by this very
// process, could wait for a request that no free thread is left to serve
// (go-fuse does the same for mounts it makes itself).
func disablePoll(dir string) {
	fd, err := syscall.Open(filepath.Join(dir, ".go-fuse-epoll-hack"), syscall.O_RDONLY, 0)
	if err != nil {
		return
	}
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	syscall.Close(fd)
}

// setReadAhead raises the kernel's readahead for the mount to kb KiB. The
// kernel starts a FUSE mount at the smaller of the INIT reply's
// max_readahead and the system default (128 KiB), so streaming reads would
// arrive as 128 KiB requests; each request costs a round trip, and larger
// ones let tfs read more pages per device request. Only root may write the
// setting; failures leave the default.
func setReadAhead(dir string, kb int) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	_ = os.WriteFile(p, []byte(fmt.Sprintf("%d\n", kb)), 0o644)
}

// abortConnection ends the FUSE connection of the mount at dir through the
// fuse control file system (mounted here if it is not yet): every request
// waiting for the daemon fails at once. The connection is named by the
// mount's device number, read from /proc/self/mountinfo: a stat of the
// mount itself could wait for the daemon.
func abortConnection(dir string) {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	minor := ""
	for _, line := range strings.Split(string(info), "\n") {
		// ID PARENT MAJOR:MINOR ROOT MOUNTPOINT ...; the last one wins.
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			_, minor, _ = strings.Cut(f[2], ":")
		}
	}
	if minor == "" {
		return
	}
	const ctl = "/sys/fs/fuse/connections"
	abort := ctl + "/" + minor + "/abort"
	if _, err := os.Stat(abort); err != nil {
		_ = unix.Mount("fusectl", ctl, "fusectl", 0, "")
	}
	_ = os.WriteFile(abort, []byte("1"), 0o200)
}
