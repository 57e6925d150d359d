package blockdev

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/heap"
)

// The NBD tests talk only to servers they start on this machine, over Unix
// sockets or 127.0.0.1. The servers are Debian packages that make setup
// installs (nbdkit, qemu-utils, nbd-server); a missing one is a failure.

// nbdServer is a server process started by a test and stopped at cleanup.
type nbdServer struct {
	t    *testing.T
	argv []string
	sock string // Unix socket, or "" for TCP
	cmd  *exec.Cmd
	gone chan struct{} // closed when cmd has exited
}

// startNBD starts argv (whose server listens on sock, or on TCP addr when
// sock is "") and waits, at most 10 s, until it accepts connections.
func startNBD(t *testing.T, sock, addr string, argv ...string) *nbdServer {
	t.Helper()
	if _, err := exec.LookPath(argv[0]); err != nil {
		t.Fatalf("%s is not installed (make setup installs it): %v", argv[0], err)
	}
	s := &nbdServer{t: t, argv: argv, sock: sock}
	s.start(addr)
	t.Cleanup(s.stop)
	return s
}

func (s *nbdServer) start(addr string) {
	s.t.Helper()
	s.cmd = exec.Command(s.argv[0], s.argv[1:]...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no server outlives the test binary
	var stderr bytes.Buffer
	s.cmd.Stderr = &stderr
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	gone, cmd := make(chan struct{}), s.cmd
	s.gone = gone
	go func() { cmd.Wait(); close(gone) }()
	network, where := "unix", s.sock
	if s.sock == "" {
		network, where = "tcp", addr
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if listening(network, where) {
			return
		}
		select {
		case <-s.gone:
			s.t.Fatalf("%s exited: %s", strings.Join(s.argv, " "), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			s.stop()
			s.t.Fatalf("%s did not listen on %s within 10 s: %s", s.argv[0], where, stderr.String())
		}
	}
}

// listening reports whether something listens at where. A TCP port is
// looked up in /proc/net/tcp rather than connected to: nbd-server -d
// serves one connection and exits after it.
func listening(network, where string) bool {
	if network == "unix" {
		c, err := net.Dial(network, where)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	_, port, _ := net.SplitHostPort(where)
	p, _ := strconv.Atoi(port)
	tab, _ := os.ReadFile("/proc/net/tcp")
	for _, line := range strings.Split(string(tab), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[3] == "0A" && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", p)) {
			return true
		}
	}
	return false
}

// stop kills the server at once, as a crash or a cut cable would.
func (s *nbdServer) stop() {
	if s.cmd != nil {
		s.cmd.Process.Kill()
		<-s.gone
		s.cmd = nil
	}
	if s.sock != "" {
		os.Remove(s.sock)
	}
}

// restart starts the same server again.
func (s *nbdServer) restart(addr string) { s.stop(); s.start(addr) }

// nbdkit starts nbdkit on a new Unix socket with the given plugin and
// arguments and returns the server and its URI (default export).
func nbdkit(t *testing.T, args ...string) (*nbdServer, string) {
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	argv := append([]string{"nbdkit", "-f", "--exit-with-parent", "-U", sock}, args...)
	return startNBD(t, sock, "", argv...), "nbd+unix:///?socket=" + sock
}

func openNBDT(t *testing.T, uri string, opts OpenOptions) *nbdDev {
	t.Helper()
	if opts.Queue == nil {
		q := bh.NewQueue(2)
		t.Cleanup(q.Close)
		opts.Queue = q
	}
	d, err := Open(uri, opts)
	if err != nil {
		t.Fatalf("open %s: %v", uri, err)
	}
	t.Cleanup(func() { d.Close() })
	return d.(*nbdDev)
}

func TestParseNBDURI(t *testing.T) {
	for _, c := range []struct {
		uri, network, addr, export string
		tls                        bool
		err                        string
	}{
		{uri: "nbd://example.com/disk", network: "tcp", addr: "example.com:10809", export: "disk"},
		{uri: "nbd://127.0.0.1:2000", network: "tcp", addr: "127.0.0.1:2000"},
		{uri: "nbd://[::1]:2000/a%20b", network: "tcp", addr: "[::1]:2000", export: "a b"},
		{uri: "nbds://h/x", network: "tcp", addr: "h:10809", export: "x", tls: true},
		{uri: "nbd+unix:///e?socket=/run/s", network: "unix", addr: "/run/s", export: "e"},
		{uri: "nbds+unix:///?socket=/s&tls-verify-peer=false", network: "unix", addr: "/s", tls: true},
		{uri: "nbd+unix:///e", err: "needs ?socket="},
		{uri: "nbd+unix://host/e?socket=/s", err: "has no host"},
		{uri: "nbd://h:99999/e", err: "bad port"},
		{uri: "nbd://h/e?socket=/s", err: "only for nbd+unix"},
		{uri: "nbd://h/e?tls-certificates=/d", err: "need an nbds scheme"},
		{uri: "nbd://h/e?color=red", err: "unknown query parameter"},
		{uri: "nbds+unix:///?socket=/s", err: "needs tls-hostname"},
		{uri: "nbd:///e", err: "no host"},
		{uri: "http://h/e", err: "unknown scheme"},
	} {
		a, err := ParseNBDURI(c.uri)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want one with %q", c.uri, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.uri, err)
			continue
		}
		if a.Network != c.network || a.Addr != c.addr || a.Export != c.export || a.TLS != c.tls || a.URI != c.uri {
			t.Errorf("%s: parsed as %+v", c.uri, a)
		}
	}
	if !IsNBDURI("nbd+unix:///x?socket=/s") || IsNBDURI("/tmp/nbd.img") || IsNBDURI("nbd.img") {
		t.Error("IsNBDURI is wrong")
	}
}

// The device model check (model_test.go) over NBD: structured and simple
// replies, a payload limit that splits requests, and a server without FUA.
func TestModelNBD(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"structured", nil},
		{"simple-replies", []string{"--no-sr"}},
		{"64KiB-payloads", []string{"--filter=blocksize-policy", "memory", "blocksize-maximum=65536", "blocksize-preferred=4096", "blocksize-minimum=512"}},
		// This nbdkit cannot hide FUA (fuamode=none is refused), so the
		// device is told the server lacks it after the handshake.
		{"no-fua", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{}, tc.args...)
			if len(args) == 0 || args[len(args)-1] == "--no-sr" {
				args = append(args, "memory")
			}
			args = append(args, fmt.Sprintf("size=%d", modelSize))
			_, uri := nbdkit(t, args...)
			q := bh.NewQueue(2)
			defer q.Close()
			pool := heap.NewPagePool(heap.PoolConfig{Budget: 64 << 20})
			defer pool.Close()
			d := openNBDT(t, uri, OpenOptions{Queue: q, Depth: 8})
			if tc.name == "no-fua" {
				d.exp.flags &^= nbdTFlagSendFUA
			}
			switch tc.name {
			case "structured":
				if !d.exp.structured {
					t.Error("structured replies not agreed")
				}
			case "simple-replies":
				if d.exp.structured {
					t.Error("structured replies agreed with --no-sr")
				}
			case "64KiB-payloads":
				if d.exp.maxPayload != 65536 {
					t.Errorf("max payload %d, want 65536", d.exp.maxPayload)
				}
			}
			runModel(t, d, pool, make([]byte, modelSize), 8, 300)
			// FUA writes, larger than the payload limit, complete.
			big := bytes.Repeat([]byte{0x5a}, 3<<20)
			done := make(chan error, 1)
			d.Submit(&Request{Op: OpWrite, Off: 1 << 20, Bufs: [][]byte{big}, FUA: true, Done: func(n int64, err error) {
				if err == nil && n != int64(len(big)) {
					err = fmt.Errorf("wrote %d bytes", n)
				}
				done <- err
			}})
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(big))
			if err := ReadAt(d, got, 1<<20); err != nil || !bytes.Equal(got, big) {
				t.Fatalf("FUA write read back wrong (%v)", err)
			}
			if tc.name == "no-fua" {
				before := d.Stats().Flushes
				if err := WriteAtFUA(d, big[:4096], 0); err != nil {
					t.Fatal(err)
				}
				if d.Stats().Flushes != before+1 {
					t.Errorf("a FUA write to a server without FUA sent %d flushes, want 1", d.Stats().Flushes-before)
				}
			}
		})
	}
}

// Each way a handshake can fail gets its own clear error.
func TestNBDHandshakeErrors(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	open := func(uri string) error {
		d, err := Open(uri, OpenOptions{Queue: q})
		if err == nil {
			d.Close()
		}
		return err
	}
	_, old := nbdkit(t, "--oldstyle", "memory", "size=1M")
	if err := open(old); !errors.Is(err, ErrNBDOldStyle) {
		t.Errorf("old-style server: %v", err)
	}
	_, odd := nbdkit(t, "memory", "size=1000")
	if err := open(odd); err == nil || !strings.Contains(err.Error(), "not a positive multiple of 512") {
		t.Errorf("1000-byte export: %v", err)
	}
	_, strict := nbdkit(t, "--filter=exportname", "memory", "exportname-strict=true", "exportname=disk", "size=1M")
	if err := open(strings.Replace(strict, "///", "///other", 1)); !errors.Is(err, ErrNBDNoExport) {
		t.Errorf("unknown export: %v", err)
	}
	if err := open(strings.Replace(strict, "///", "///disk", 1)); err != nil {
		t.Errorf("known export: %v", err)
	}
	// Something that is not an NBD server at all.
	sock := filepath.Join(t.TempDir(), "echo.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
			time.Sleep(100 * time.Millisecond)
			c.Close()
		}
	}()
	if err := open("nbd+unix:///?socket=" + sock); !errors.Is(err, ErrNBDNotAServer) {
		t.Errorf("not a server: %v", err)
	}
	if err := open("nbd+unix:///?socket=" + filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "connect") {
		t.Errorf("no server: %v", err)
	}
}

// A read-only export makes a read-only device.
func TestNBDReadOnlyExport(t *testing.T) {
	_, uri := nbdkit(t, "-r", "memory", "size=1M")
	d := openNBDT(t, uri, OpenOptions{})
	if !d.ReadOnly() {
		t.Fatal("read-only export opened writable")
	}
	if err := WriteAt(d, make([]byte, 512), 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write to a read-only export: %v", err)
	}
}

// Server errors reach the requester as errnos; other requests are fine.
func TestNBDServerErrors(t *testing.T) {
	_, uri := nbdkit(t, "--filter=error", "memory", "error=EIO", "error-pread-rate=100%", "size=1M")
	d := openNBDT(t, uri, OpenOptions{})
	if err := WriteAt(d, bytes.Repeat([]byte{1}, 4096), 0); err != nil {
		t.Fatalf("write: %v", err)
	}
	err := ReadAt(d, make([]byte, 4096), 0)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read from a failing server: %v, want EIO", err)
	}
	if err := Flush(d); err != nil {
		t.Fatalf("flush after a failed read: %v", err)
	}
}

// A server killed in the middle of writes and started again: the requests
// in flight are sent again, and what was flushed before is all there.
func TestNBDReconnect(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	srv, uri := nbdkit(t, "file", "file="+img)
	logs := make(chan string, 100)
	d := openNBDT(t, uri, OpenOptions{NBDTimeout: 20 * time.Second, Logf: func(f string, a ...any) {
		select {
		case logs <- fmt.Sprintf(f, a...):
		default:
		}
	}})
	rng := rand.New(rand.NewSource(1))
	want := make([]byte, 8<<20)
	rng.Read(want)
	// Half the disk written and flushed before the kill.
	if err := WriteAt(d, want[:4<<20], 0); err != nil {
		t.Fatal(err)
	}
	if err := Flush(d); err != nil {
		t.Fatal(err)
	}
	// The other half in flight while the server dies and comes back.
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		off := 4<<20 + i*65536
		d.Submit(&Request{Op: OpWrite, Off: int64(off), Bufs: [][]byte{want[off : off+65536]}, Done: func(n int64, err error) { errs <- err }})
		if i == 8 {
			srv.stop()
		}
	}
	time.Sleep(300 * time.Millisecond) // the writes wait for the server
	srv.start("")
	for i := 0; i < 64; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("write across the reconnect: %v", err)
		}
	}
	// The writes that completed before the kill were not flushed: the
	// first flush after the reconnect cannot promise them (a server may
	// lose its cache with its process) and says so; the next one can.
	if err := Flush(d); err != nil && !errors.Is(err, syscall.EIO) {
		t.Fatalf("first flush after the reconnect: %v", err)
	}
	if err := Flush(d); err != nil {
		t.Fatalf("flush after the reconnect: %v", err)
	}
	if d.Reconnects() == 0 {
		t.Fatal("no reconnect counted")
	}
	got := make([]byte, 8<<20)
	if err := ReadAt(d, got, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("data differs at byte %d after the reconnect", i)
	}
	for seen := ""; !strings.Contains(seen, "connected again after"); {
		select {
		case m := <-logs:
			seen += m + "\n"
		case <-time.After(5 * time.Second):
			t.Fatalf("the log does not say it reconnected: %s", seen)
		}
	}
}

// Past the timeout, requests fail with EIO; once the server is back they
// succeed again.
func TestNBDTimeout(t *testing.T) {
	srv, uri := nbdkit(t, "memory", "size=1M")
	d := openNBDT(t, uri, OpenOptions{NBDTimeout: 500 * time.Millisecond})
	srv.stop()
	start := time.Now()
	err := WriteAt(d, make([]byte, 4096), 0)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("write with the server gone: %v, want EIO", err)
	}
	// The outage began when the reader saw the connection end, a little
	// before start: only an upper bound is sure.
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("failed after %v; the timeout is 500ms", el)
	}
	if err := ReadAt(d, make([]byte, 4096), 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read while the server is still gone: %v, want EIO", err)
	}
	srv.start("")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if err := ReadAt(d, make([]byte, 4096), 0); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the device did not come back with the server: %v", err)
		}
	}
}

// replayReader hands the NBD reader one prepared reply at a time, from
// preallocated memory, so that only the reader itself can allocate.
type replayReader struct {
	buf [8192]byte
	cur []byte
}

func (r *replayReader) Read(p []byte) (int, error) {
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	if n == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	return n, nil
}

// simpleReply and structuredReply lay out a successful read reply of data.
func (r *replayReader) simpleReply(handle uint64, data []byte) {
	b := r.buf[:0]
	b = binary.BigEndian.AppendUint32(b, nbdSimpleMagic)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint64(b, handle)
	r.cur = append(b, data...)
}

func (r *replayReader) structuredReply(handle uint64, off uint64, data []byte) {
	b := r.buf[:0]
	b = binary.BigEndian.AppendUint32(b, nbdStructMagic)
	b = binary.BigEndian.AppendUint16(b, nbdReplyFlagDone)
	b = binary.BigEndian.AppendUint16(b, nbdReplyTypeOffsetData)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint32(b, uint32(8+len(data)))
	b = binary.BigEndian.AppendUint64(b, off)
	r.cur = append(b, data...)
}

// TestNBDReaderAllocatesNothing runs the reply reader's fast path (the
// interrupt handler of an NBD connection) for simple and structured read
// replies and checks that it allocates nothing, while every completion
// still reaches its requester through the bhqueue.
func TestNBDReaderAllocatesNothing(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	for _, structured := range []bool{false, true} {
		d := &nbdDev{addr: &NBDAddress{URI: "test"}, q: q, slots: make([]nbdSlot, 4), free: make(chan uint32, 4),
			broken: make(chan struct{}, 1), logf: t.Logf}
		d.exp.structured = structured
		for i := range d.slots {
			d.slots[i].dev, d.slots[i].idx = d, uint32(i)
			d.free <- uint32(i)
		}
		rep := &replayReader{}
		src := &nbdReader{dev: d, r: bufio.NewReaderSize(rep, 64<<10)}
		data := bytes.Repeat([]byte{0xa5}, 4096)
		buf := make([]byte, 4096)
		var delivered atomic.Int64
		r := &Request{Op: OpRead, Bufs: [][]byte{buf}, Done: func(n int64, err error) {
			if err == nil {
				delivered.Add(n)
			}
		}}
		var pending []*nbdSlot
		runs := 0
		allocs := testing.AllocsPerRun(1000, func() {
			for deadline := time.Now().Add(10 * time.Second); delivered.Load() != int64(runs)*4096; runtime.Gosched() {
				if time.Now().After(deadline) {
					t.Fatalf("completion %d never delivered", runs)
				}
			}
			// What Submit does before sending a part...
			r.parts, r.moved, r.fail, r.stats, r.start, r.owner = 1, 0, 0, &d.stats, nowNs(), d
			s := d.take(r, &pending)
			s.cmd, s.off, s.bufs, s.n = nbdCmdRead, 8192, r.Bufs, 4096
			s.armed.Store(1)
			d.dropPart(r)
			// ...and what the reader does with the reply.
			if structured {
				rep.structuredReply(s.handle(), 8192, data)
			} else {
				rep.simpleReply(s.handle(), data)
			}
			if err := src.Wait(); err != nil {
				t.Fatal(err)
			}
			if _, stop := src.Handle(); stop {
				t.Fatalf("reader stopped: %v", src.err)
			}
			runs++
		})
		if allocs != 0 {
			t.Errorf("structured=%v: the reply reader allocates %.1f times per reply, want 0", structured, allocs)
		}
		for deadline := time.Now().Add(5 * time.Second); delivered.Load() != int64(runs)*4096; runtime.Gosched() {
			if time.Now().After(deadline) {
				t.Fatalf("delivered %d bytes, want %d", delivered.Load(), runs*4096)
			}
		}
		if !bytes.Equal(buf, data) || len(d.free) != len(d.slots) {
			t.Fatalf("structured=%v: data wrong or %d of %d slots free", structured, len(d.free), len(d.slots))
		}
	}
}

// A reply to a handle that is not in flight ends the connection (the
// supervisor then makes a new one) instead of completing something else.
func TestNBDReaderRefusesStrayReplies(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	d := &nbdDev{addr: &NBDAddress{URI: "test"}, q: q, slots: make([]nbdSlot, 2), free: make(chan uint32, 2),
		broken: make(chan struct{}, 1), logf: func(string, ...any) {}}
	for i := range d.slots {
		d.slots[i].dev, d.slots[i].idx = d, uint32(i)
	}
	rep := &replayReader{}
	client, server := net.Pipe()
	defer server.Close()
	src := &nbdReader{dev: d, conn: client, r: bufio.NewReader(rep)}
	rep.simpleReply(1<<32|1, nil)
	if err := src.Wait(); err != nil {
		t.Fatal(err)
	}
	// Handle, in interrupt context, only records why the connection must
	// end; the next Wait closes it and tells the supervisor.
	if _, stop := src.Handle(); stop || !errors.Is(src.err, errNBDProtocol) {
		t.Fatalf("stray reply: stop=%v err=%v", stop, src.err)
	}
	if err := src.Wait(); !errors.Is(err, errNBDProtocol) {
		t.Fatalf("Wait after a stray reply: %v", err)
	}
	if _, err := client.Write([]byte{0}); err == nil {
		t.Error("the connection was not closed")
	}
	select {
	case <-d.broken:
	default:
		t.Fatal("the supervisor was not told")
	}
}

// writeTestCA makes a CA and a certificate for host signed by it, as
// nbdkit's --tls-certificates directory wants them, and returns the dir.
func writeTestCA(t *testing.T, host string) string {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tfsmount test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(crand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(crand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	for name, block := range map[string]*pem.Block{
		"ca-cert.pem":     {Type: "CERTIFICATE", Bytes: caDER},
		"server-cert.pem": {Type: "CERTIFICATE", Bytes: der},
		"server-key.pem":  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TLS through NBD_OPT_STARTTLS against nbdkit --tls=require: the right
// CA works, a plain connection is told TLS is required, and a certificate
// for another name is refused.
func TestNBDTLS(t *testing.T) {
	certs := writeTestCA(t, "localhost")
	srv, plain := nbdkit(t, "--tls=require", "--tls-certificates="+certs, "memory", "size=8M")
	sock := srv.sock
	q := bh.NewQueue(1)
	defer q.Close()
	if d, err := Open(plain, OpenOptions{Queue: q}); !errors.Is(err, ErrNBDTLSNeeded) {
		if err == nil {
			d.Close()
		}
		t.Errorf("plain connection to a TLS-only server: %v", err)
	}
	wrongName := "nbds+unix:///?socket=" + sock + "&tls-certificates=" + certs + "&tls-hostname=elsewhere"
	if d, err := Open(wrongName, OpenOptions{Queue: q}); err == nil || !strings.Contains(err.Error(), "TLS handshake") {
		if err == nil {
			d.Close()
		}
		t.Errorf("certificate for another name: %v", err)
	}
	d := openNBDT(t, "nbds+unix:///?socket="+sock+"&tls-certificates="+certs+"&tls-hostname=localhost", OpenOptions{Queue: q})
	want := bytes.Repeat([]byte("tls!"), 256<<10)
	if err := WriteAt(d, want, 4096); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if err := ReadAt(d, got, 4096); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back over TLS: %v", err)
	}
	if !strings.Contains(Describe(d), "TLS") {
		t.Errorf("Describe: %s", Describe(d))
	}
}

// qemu-nbd serving a qcow2 image, and nbd-server serving a file over TCP
// on 127.0.0.1: the device model check passes through both.
func TestModelQemuNBDAndNBDServer(t *testing.T) {
	dir := t.TempDir()
	t.Run("qemu-nbd-qcow2", func(t *testing.T) {
		img := filepath.Join(dir, "disk.qcow2")
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, "16M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v: %s", err, out)
		}
		sock := filepath.Join(dir, "qemu.sock")
		startNBD(t, sock, "", "qemu-nbd", "--persistent", "--shared=4", "-f", "qcow2", "-x", "disk", "-k", sock, img)
		pool := heap.NewPagePool(heap.PoolConfig{Budget: 64 << 20})
		defer pool.Close()
		d := openNBDT(t, "nbd+unix:///disk?socket="+sock, OpenOptions{Depth: 8})
		runModel(t, d, pool, make([]byte, modelSize), 8, 300)
	})
	t.Run("nbd-server-tcp", func(t *testing.T) {
		img := filepath.Join(dir, "disk.raw")
		if err := os.WriteFile(img, make([]byte, 16<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		port := freePort(t)
		conf := filepath.Join(dir, "nbd-server.conf")
		cfg := fmt.Sprintf("[generic]\n\tuser = root\n\tgroup = root\n\tlistenaddr = 127.0.0.1\n\tport = %d\n\tallowlist = true\n[disk]\n\texportname = %s\n\tflush = true\n\tfua = true\n\ttrim = true\n", port, img)
		if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		startNBD(t, "", addr, "nbd-server", "-C", conf, "-d")
		pool := heap.NewPagePool(heap.PoolConfig{Budget: 64 << 20})
		defer pool.Close()
		d := openNBDT(t, "nbd://"+addr+"/disk", OpenOptions{Depth: 8})
		runModel(t, d, pool, make([]byte, modelSize), 8, 300)
	})
}

// freePort finds a TCP port on 127.0.0.1 that nobody listens on.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
