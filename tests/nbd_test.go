package tests

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Volumes served over NBD: the servers are started here, on Unix sockets,
// and stopped at cleanup; every wait on them is bounded.

// nbdServer is an NBD server process serving on a Unix socket.
type nbdServer struct {
	t    *testing.T
	argv []string
	sock string
	cmd  *exec.Cmd
	gone chan struct{}
	log  bytes.Buffer
}

// serveNBD starts argv, in which "{sock}" stands for a new socket path, and
// waits (at most 10 s) until it accepts connections.
func serveNBD(t *testing.T, argv ...string) *nbdServer {
	t.Helper()
	if _, err := exec.LookPath(argv[0]); err != nil {
		t.Fatalf("%s is not installed (make setup installs it): %v", argv[0], err)
	}
	s := &nbdServer{t: t, sock: filepath.Join(t.TempDir(), "nbd.sock")}
	for _, a := range argv {
		s.argv = append(s.argv, strings.ReplaceAll(a, "{sock}", s.sock))
	}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// URI is the address of export on this server.
func (s *nbdServer) URI(export string) string {
	return "nbd+unix:///" + export + "?socket=" + s.sock
}

func (s *nbdServer) start() {
	s.t.Helper()
	s.log.Reset()
	s.cmd = exec.Command(s.argv[0], s.argv[1:]...)
	s.cmd.Stderr = &s.log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	gone, cmd := make(chan struct{}), s.cmd
	s.gone = gone
	go func() { cmd.Wait(); close(gone) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", s.sock); err == nil {
			c.Close()
			return
		}
		select {
		case <-gone:
			s.t.Fatalf("%s exited: %s", strings.Join(s.argv, " "), s.log.String())
		default:
		}
		if time.Now().After(deadline) {
			s.stop()
			s.t.Fatalf("%s not listening after 10 s", s.argv[0])
		}
	}
}

// stop kills the server at once, as a crash would.
func (s *nbdServer) stop() {
	if s.cmd != nil {
		s.cmd.Process.Kill()
		<-s.gone
		s.cmd = nil
		os.Remove(s.sock)
	}
}

// qcow2Of converts a raw image to qcow2 with qemu-img.
func qcow2Of(t *testing.T, raw string) string {
	t.Helper()
	out := strings.TrimSuffix(raw, ".img") + ".qcow2"
	if b, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, b)
	}
	return out
}

// serveQcow2 serves a qcow2 image with qemu-nbd as export "vol".
func serveQcow2(t *testing.T, qcow string) *nbdServer {
	return serveNBD(t, "qemu-nbd", "--persistent", "--shared=8", "-f", "qcow2", "-x", "vol", "-k", "{sock}", qcow)
}

// Every Nanos-made fixture, converted to qcow2 and served by qemu-nbd,
// mounts and reads exactly as from its file, read-only and read-write, and
// fsck through NBD calls it clean afterwards.
func TestNBDFixtures(t *testing.T) {
	for _, name := range fixtureNames(t) {
		t.Run(name, func(t *testing.T) {
			exp := loadExpected(t, name)
			srv := serveQcow2(t, qcow2Of(t, gunzipFixture(t, name)))
			uri := srv.URI("vol")
			m := mountImage(t, uri, "ro")
			checkTreeMatches(t, m.Dir, exp.Entries)
			m.Unmount()
			m = mountImage(t, uri, "rw")
			checkTreeMatches(t, m.Dir, exp.Entries)
			m.finish()
			if exp.BootOffset != nil {
				m := mountImage(t, uri, "ro", "partition=boot")
				if _, err := os.ReadDir(m.Dir); err != nil {
					t.Errorf("boot volume over NBD: %v", err)
				}
				m.Unmount()
				requireFsckClean(t, uri, "--partition", "boot")
			}
		})
	}
}

// The offline commands take NBD URIs too: mkfs, put, ls, cat, get, fsck and
// compact on a qcow2 image served by qemu-nbd.
func TestNBDOfflineCommands(t *testing.T) {
	dir := t.TempDir()
	qcow := filepath.Join(dir, "vol.qcow2")
	if b, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", qcow, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, b)
	}
	uri := serveQcow2(t, qcow).URI("vol")
	mustRun(t, "mkfs", "--label", "over-nbd", uri)
	src := filepath.Join(dir, "hello.txt")
	if err := os.WriteFile(src, []byte("hello over NBD\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "put", uri, src, "/hello.txt")
	if r := mustRun(t, "cat", uri, "/hello.txt"); string(r.Stdout) != "hello over NBD\n" {
		t.Fatalf("cat: %q", r.Stdout)
	}
	if r := mustRun(t, "ls", uri, "/"); !strings.Contains(string(r.Stdout), "hello.txt") {
		t.Fatalf("ls: %q", r.Stdout)
	}
	dest := filepath.Join(dir, "back.txt")
	mustRun(t, "get", uri, "/hello.txt", dest)
	if b, _ := os.ReadFile(dest); string(b) != "hello over NBD\n" {
		t.Fatalf("get: %q", b)
	}
	mustRun(t, "compact", uri)
	requireFsckClean(t, uri)
	// The volume is a real qcow2 image: qemu-img sees the data we wrote.
	if b, err := exec.Command("qemu-img", "check", "-U", qcow).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check: %v: %s", err, b)
	}
	if r := runTool(t, time.Minute, "mkfs", "nbd+unix:///vol?socket="+filepath.Join(dir, "nobody.sock")); r.Err == nil ||
		!strings.Contains(string(r.Stderr), "connect") {
		t.Fatalf("mkfs on a socket nobody serves: %s", r)
	}
}

// The random-operation model test, which checks every file's bytes, names
// and sizes against a model and remounts, on a volume served by nbdkit's
// memory plugin and on a qcow2 image served by qemu-nbd.
func TestNBDRandomOpsModel(t *testing.T) {
	qcow := filepath.Join(t.TempDir(), "vol.qcow2")
	if b, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", qcow, "128M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, b)
	}
	for name, srv := range map[string]func() *nbdServer{
		"nbdkit-memory": func() *nbdServer {
			return serveNBD(t, "nbdkit", "-f", "--exit-with-parent", "-U", "{sock}", "memory", "size=128M")
		},
		"qemu-nbd-qcow2": func() *nbdServer { return serveQcow2(t, qcow) },
	} {
		t.Run(name, func(t *testing.T) {
			s := srv()
			uri := s.URI("vol")
			if name == "nbdkit-memory" {
				uri = s.URI("")
			}
			mustRun(t, "mkfs", uri)
			seed := time.Now().UnixNano()
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("replay with seed %d", seed)
				}
			})
			m := mountImage(t, uri, "rw")
			m = runModel(t, m, seed, 3000)
			m.finish()
		})
	}
}

// Faults injected by nbdkit's error filter: EIO reaches the caller,
// nothing else breaks, and the volume is consistent once the server
// behaves again.
func TestNBDServerErrorsReachCaller(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "vol.img")
	mustRun(t, "mkfs", "--size", "64M", img)
	// One request in five fails with EIO while the trigger file exists.
	trigger := filepath.Join(dir, "fail-now")
	srv := serveNBD(t, "nbdkit", "-f", "--exit-with-parent", "-U", "{sock}", "--filter=error", "file", "file="+img,
		"error=EIO", "error-rate=20%", "error-file="+trigger)
	m := mountImage(t, srv.URI(""), "rw", "nbd_timeout=5")
	if err := os.WriteFile(trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	var eio, ok int
	good := map[string][]byte{} // fsync'd without error
	for i := 0; i < 40; i++ {
		data := make([]byte, 64<<10+rng.Intn(64<<10))
		rng.Read(data)
		p := m.Path(fmt.Sprintf("f%d", i))
		err := writeSync(p, data)
		switch {
		case err == nil:
			ok++
			good[p] = data
		case errors.Is(err, syscall.EIO):
			eio++
		default:
			t.Fatalf("write %s: %v, want success or EIO", p, err)
		}
	}
	t.Logf("through a server failing one request in five: %d fsync'd writes failed with EIO, %d succeeded", eio, ok)
	if eio == 0 || ok == 0 {
		t.Errorf("%d writes failed with EIO and %d succeeded; want some of each at a 20%% error rate", eio, ok)
	}
	// Once the server behaves again, the mount works, unmounts cleanly and
	// the volume is consistent.
	if err := os.Remove(trigger); err != nil {
		t.Fatal(err)
	}
	if err := writeSync(m.Path("after"), []byte("fine again\n")); err != nil {
		t.Fatalf("write after the errors stopped: %v", err)
	}
	m.Unmount()
	m = mountImage(t, srv.URI(""), "ro")
	for p, want := range good {
		p = m.Path(filepath.Base(p))
		if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s, fsync'd without error, reads back wrong after a remount: %v", p, err)
		}
	}
	m.Unmount()
	srv.stop()
	requireFsckClean(t, img)
}

// writeSync writes a file and fsyncs it, returning the first error.
func writeSync(p string, data []byte) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	return errors.Join(werr, serr, cerr)
}

// A slow server (nbdkit's delay filter) is waited for, however long each
// request takes, without a timeout below the configured one.
func TestNBDSlowServer(t *testing.T) {
	img := filepath.Join(t.TempDir(), "vol.img")
	mustRun(t, "mkfs", "--size", "64M", img)
	srv := serveNBD(t, "nbdkit", "-f", "--exit-with-parent", "-U", "{sock}", "--filter=delay", "file", "file="+img,
		"rdelay=300ms", "wdelay=300ms")
	m := mountImage(t, srv.URI(""), "rw", "nbd_timeout=1")
	want := bytes.Repeat([]byte("slow but sure\n"), 10000)
	if err := writeSync(m.Path("slow.txt"), want); err != nil {
		t.Fatalf("write through a slow server: %v", err)
	}
	m.Unmount()
	m = mountImage(t, srv.URI(""), "ro")
	if got, err := os.ReadFile(m.Path("slow.txt")); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back through a slow server: %v", err)
	}
	m.Unmount()
	srv.stop()
	requireFsckClean(t, img)
}

// The server killed and restarted in the middle of fsync'd writes: every
// file fsync'd before the kill, and every one written after, is there.
func TestNBDServerRestart(t *testing.T) {
	img := filepath.Join(t.TempDir(), "vol.img")
	mustRun(t, "mkfs", "--size", "128M", img)
	srv := serveNBD(t, "nbdkit", "-f", "--exit-with-parent", "-U", "{sock}", "file", "file="+img)
	m := mountImage(t, srv.URI(""), "rw", "nbd_timeout=30")
	rng := rand.New(rand.NewSource(2))
	files := map[string][]byte{}
	write := func(i int) {
		data := make([]byte, 4096+rng.Intn(256<<10))
		rng.Read(data)
		name := fmt.Sprintf("f%03d", i)
		if err := writeSync(m.Path(name), data); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
		files[name] = data
	}
	for i := 0; i < 30; i++ {
		write(i)
	}
	restarted := make(chan struct{})
	srv.stop()
	go func() {
		time.Sleep(time.Second)
		srv.start()
		close(restarted)
	}()
	for i := 30; i < 60; i++ { // these wait for the server
		write(i)
	}
	<-restarted
	m.Unmount()
	m = mountImage(t, srv.URI(""), "ro")
	for name, want := range files {
		if got, err := os.ReadFile(m.Path(name)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s after the server restart: %v (%d bytes, want %d)", name, err, len(got), len(want))
		}
	}
	m.Unmount()
	srv.stop()
	requireFsckClean(t, img)
}
