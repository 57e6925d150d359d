package tests

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// mount is one running tfsmount daemon and its mount point. The daemon runs
// in the foreground (-f) as our child so a test knows its pid, sees its
// stderr and can wait for it to finish writing the image after unmount.
// Invariant: while mounted is true, Dir is a FUSE mount whose source is Image.
type mount struct {
	t       *testing.T
	Image   string
	Dir     string
	Opts    string
	cmd     *exec.Cmd
	stderr  *syncBuffer
	exited  chan struct{} // closed when the daemon process has been waited for
	exitErr error
	mounted bool
}

// syncBuffer collects the daemon's output; the exec copier goroutine writes
// while a failing test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return clip(b.buf.Bytes())
}

// mountTimeout bounds how long a mount may take to appear.
const mountTimeout = 60 * time.Second

// daemonExitTimeout bounds how long the daemon may take to write back and
// exit after its mount went away.
const daemonExitTimeout = 3 * time.Minute

// mountImage mounts img on a fresh directory with the given -o options and
// returns when the mount is visible. The mount is always torn down in
// t.Cleanup, lazily if it has to be.
func mountImage(t *testing.T, img string, opts ...string) *mount {
	t.Helper()
	requireFUSE(t)
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return mountAt(t, img, dir, opts...)
}

func mountAt(t *testing.T, img, dir string, opts ...string) *mount {
	t.Helper()
	m, err := startMount(t, img, dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// startMount is mountAt that returns the failure instead of failing the
// test, for tests that expect a mount to be refused.
//
// TFS_E2E_MOUNT_OPTS adds options to every mount, to run the whole suite
// in another configuration (for example writeback_cache).
func startMount(t *testing.T, img, dir string, opts ...string) (*mount, error) {
	t.Helper()
	if extra := os.Getenv("TFS_E2E_MOUNT_OPTS"); extra != "" {
		opts = append(opts, extra)
	}
	m := &mount{t: t, Image: img, Dir: dir, Opts: strings.Join(opts, ","),
		stderr: &syncBuffer{}, exited: make(chan struct{})}
	args := []string{"-f"}
	if m.Opts != "" {
		args = append(args, "-o", m.Opts)
	}
	args = append(args, img, dir)
	m.cmd = exec.Command(tfsmountBin, args...)
	m.cmd.Stdout = m.stderr
	m.cmd.Stderr = m.stderr
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start tfsmount: %w", err)
	}
	go func() {
		m.exitErr = m.cmd.Wait()
		close(m.exited)
	}()
	t.Cleanup(m.cleanup)
	deadline := time.Now().Add(mountTimeout)
	for {
		if src, ok := mountSource(dir); ok {
			if want := wantSource(img, m.Opts); src != want {
				return m, fmt.Errorf("mount source is %q, want %q", src, want)
			}
			m.mounted = true
			return m, nil
		}
		select {
		case <-m.exited:
			return nil, fmt.Errorf("tfsmount %s exited before mounting: %v\n%s",
				strings.Join(args, " "), m.exitErr, m.stderr)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return m, fmt.Errorf("mount of %s on %s not ready after %v\n%s", img, dir, mountTimeout, m.stderr)
		}
	}
}

// Path joins a path inside the mount.
func (m *mount) Path(rel ...string) string {
	return filepath.Join(append([]string{m.Dir}, rel...)...)
}

// Pid is the daemon's process id.
func (m *mount) Pid() int { return m.cmd.Process.Pid }

// Unmount unmounts with fusermount3 and waits until the daemon exits with
// status 0, which is when everything is written to the image.
func (m *mount) Unmount() {
	m.t.Helper()
	if !m.mounted {
		m.t.Fatalf("unmount of %s: not mounted", m.Dir)
	}
	var out []byte
	var err error
	for i := 0; i < 50; i++ { // EBUSY while the kernel still releases files
		out, err = exec.Command("fusermount3", "-u", m.Dir).CombinedOutput()
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		m.t.Fatalf("fusermount3 -u %s: %v: %s", m.Dir, err, out)
	}
	m.mounted = false
	m.waitExit(true)
}

// waitExit waits for the daemon; wantClean requires exit status 0.
func (m *mount) waitExit(wantClean bool) {
	m.t.Helper()
	select {
	case <-m.exited:
	case <-time.After(daemonExitTimeout):
		m.cmd.Process.Kill()
		<-m.exited
		m.t.Fatalf("daemon for %s did not exit %v after unmount\n%s", m.Image, daemonExitTimeout, m.stderr)
	}
	if wantClean && m.exitErr != nil {
		m.t.Fatalf("daemon for %s exited with %v\n%s", m.Image, m.exitErr, m.stderr)
	}
}

// finish is what every test that wrote through a mount calls at its end:
// unmount, wait for the daemon to write everything, and fsck the image.
func (m *mount) finish() {
	m.t.Helper()
	m.Unmount()
	requireFsckClean(m.t, m.Image, fsckArgsFor(m.Opts)...)
}

// wantSource is the mount source tfsmount must show: the IMAGE argument
// exactly, unless an fsname= option overrides it.
func wantSource(img, opts string) string {
	for _, o := range strings.Split(opts, ",") {
		if v, ok := strings.CutPrefix(o, "fsname="); ok {
			return v
		}
	}
	return img
}

// fsckArgsFor passes a partition= mount option on to fsck.
func fsckArgsFor(opts string) []string {
	for _, o := range strings.Split(opts, ",") {
		if v, ok := strings.CutPrefix(o, "partition="); ok {
			return []string{"--partition", v}
		}
	}
	return nil
}

// remount unmounts (checking fsck) and mounts the same image again on the
// same directory with the same options.
func (m *mount) remount() *mount {
	m.t.Helper()
	m.finish()
	return mountAt(m.t, m.Image, m.Dir, strings.Split(m.Opts, ",")...)
}

// cleanup runs in t.Cleanup: whatever state the test left, the mount goes
// away (lazily if it is busy) and the daemon is reaped.
func (m *mount) cleanup() {
	if _, ok := mountSource(m.Dir); ok {
		if err := exec.Command("fusermount3", "-u", m.Dir).Run(); err != nil {
			if err := exec.Command("fusermount3", "-u", "-z", m.Dir).Run(); err != nil {
				exec.Command("umount", "-l", m.Dir).Run()
			}
		}
	}
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		m.cmd.Process.Kill()
		<-m.exited
	}
}

// mountSource returns the source (FUSE fsname) of the mount at dir, reading
// /proc/self/mountinfo, and whether dir is a mount point at all.
func mountSource(dir string) (string, bool) {
	e, ok := findMount(dir)
	return e.source, ok
}

type mountEntry struct {
	mountPoint, fstype, source, options string
}

func findMount(dir string) (mountEntry, bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return mountEntry{}, false
	}
	defer f.Close()
	var found mountEntry
	ok := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || len(fields) < 6 || len(fields) < sep+3 {
			continue
		}
		if unescapeMountinfo(fields[4]) == dir {
			// The last entry for a mount point is the one on top.
			found = mountEntry{mountPoint: dir, fstype: fields[sep+1],
				source: unescapeMountinfo(fields[sep+2]), options: fields[5]}
			ok = true
		}
	}
	return found, ok
}

// unescapeMountinfo undoes the octal escapes (\040 for space) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// processesHolding lists the pids that have path open, for daemons this
// test did not start itself (background mode, the mount helper).
func processesHolding(path string) []int {
	var pids []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name())); err == nil && target == path {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// waitReleased waits until no process holds path open (a daemon that is not
// our child has finished), failing after timeout.
func waitReleased(t *testing.T, path string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pids := processesHolding(path)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still held open by pids %v after %v", path, pids, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lazyUnmount is the last-resort cleanup for mounts made by other means
// (mount(8), background daemons).
func lazyUnmount(dir string) {
	if _, ok := mountSource(dir); !ok {
		return
	}
	if exec.Command("fusermount3", "-u", dir).Run() != nil {
		if exec.Command("umount", dir).Run() != nil {
			exec.Command("umount", "-l", dir).Run()
		}
	}
}

// errnoOf extracts the errno from an error chain (0 if none).
func errnoOf(err error) syscall.Errno {
	for err != nil {
		if e, ok := err.(syscall.Errno); ok {
			return e
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return 0
		}
		err = u.Unwrap()
	}
	return 0
}

// wantErrno fails unless err carries errno want.
func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if got := errnoOf(err); got != want {
		t.Errorf("%s: got error %v (errno %d), want %v", what, err, int(got), want)
	}
}

// wantErrnoIn fails unless err carries one of the errnos POSIX allows.
func wantErrnoIn(t *testing.T, what string, err error, want ...syscall.Errno) {
	t.Helper()
	got := errnoOf(err)
	for _, w := range want {
		if got == w {
			return
		}
	}
	t.Errorf("%s: got error %v (errno %d), want one of %v", what, err, int(got), want)
}
