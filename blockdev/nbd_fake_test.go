package blockdev

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/bh"
)

// The connection-loss paths of the NBD client, against a scripted server
// that misbehaves on purpose in ways the real servers cannot be made to.

// fakeNBD is a scripted NBD server on a Unix socket.
type fakeNBD struct {
	l     net.Listener
	sock  string
	conns atomic.Int32
	size  uint64
	tflag uint16
	// handle is called for each connection after the handshake, with the
	// connection's index.
	handle func(c net.Conn, idx int)
	mu     sync.Mutex
	disk   []byte
	refuse atomic.Pointer[func(idx int) bool] // connections to drop before the handshake
}

func newFakeNBD(t *testing.T, size uint64, handle func(c net.Conn, idx int)) *fakeNBD {
	sock := filepath.Join(t.TempDir(), "fake.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeNBD{l: l, sock: sock, size: size, tflag: nbdTFlagHasFlags | nbdTFlagSendFlush | nbdTFlagSendFUA, handle: handle, disk: make([]byte, size)}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			idx := int(f.conns.Add(1)) - 1
			go func() {
				defer c.Close()
				if r := f.refuse.Load(); r != nil && (*r)(idx) {
					return
				}
				if f.handshake(c) != nil {
					return
				}
				f.handle(c, idx)
			}()
		}
	}()
	return f
}

func (f *fakeNBD) uri() string { return "nbd+unix:///?socket=" + f.sock }

func (f *fakeNBD) handshake(c net.Conn) error {
	var b [18]byte
	binary.BigEndian.PutUint64(b[0:], nbdMagic)
	binary.BigEndian.PutUint64(b[8:], nbdOptMagic)
	binary.BigEndian.PutUint16(b[16:], nbdFlagFixedNewstyle|nbdFlagNoZeroes)
	if _, err := c.Write(b[:]); err != nil {
		return err
	}
	var cf [4]byte
	if _, err := io.ReadFull(c, cf[:]); err != nil {
		return err
	}
	for {
		var h [16]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return err
		}
		opt, n := binary.BigEndian.Uint32(h[8:]), binary.BigEndian.Uint32(h[12:])
		data := make([]byte, n)
		if _, err := io.ReadFull(c, data); err != nil {
			return err
		}
		rep := func(typ uint32, d []byte) {
			var r [20]byte
			binary.BigEndian.PutUint64(r[0:], nbdRepMagic)
			binary.BigEndian.PutUint32(r[8:], opt)
			binary.BigEndian.PutUint32(r[12:], typ)
			binary.BigEndian.PutUint32(r[16:], uint32(len(d)))
			c.Write(append(r[:], d...))
		}
		switch opt {
		case nbdOptGo:
			info := binary.BigEndian.AppendUint16(nil, nbdInfoExport)
			info = binary.BigEndian.AppendUint64(info, f.size)
			info = binary.BigEndian.AppendUint16(info, f.tflag)
			rep(nbdRepInfo, info)
			rep(nbdRepAck, nil)
			return nil
		default:
			rep(nbdRepErrUnsup, nil)
		}
	}
}

type fakeReq struct {
	flags, cmd uint16
	handle     uint64
	off        uint64
	n          uint32
	data       []byte
}

func readReq(c net.Conn) (fakeReq, error) {
	var h [28]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return fakeReq{}, err
	}
	r := fakeReq{flags: binary.BigEndian.Uint16(h[4:]), cmd: binary.BigEndian.Uint16(h[6:]),
		handle: binary.BigEndian.Uint64(h[8:]), off: binary.BigEndian.Uint64(h[16:]), n: binary.BigEndian.Uint32(h[24:])}
	if r.cmd == nbdCmdWrite {
		r.data = make([]byte, r.n)
		if _, err := io.ReadFull(c, r.data); err != nil {
			return fakeReq{}, err
		}
	}
	return r, nil
}

// serve answers every request correctly, simple replies.
func (f *fakeNBD) serve(c net.Conn) {
	var wmu sync.Mutex
	for {
		r, err := readReq(c)
		if err != nil || r.cmd == nbdCmdDisc {
			return
		}
		var rep [16]byte
		binary.BigEndian.PutUint32(rep[0:], nbdSimpleMagic)
		binary.BigEndian.PutUint64(rep[8:], r.handle)
		out := rep[:]
		f.mu.Lock()
		switch r.cmd {
		case nbdCmdRead:
			out = append(out, f.disk[r.off:r.off+uint64(r.n)]...)
		case nbdCmdWrite:
			copy(f.disk[r.off:], r.data)
		}
		f.mu.Unlock()
		wmu.Lock()
		c.Write(out)
		wmu.Unlock()
	}
}

// newFakeNBDFirst is a fake whose first connection runs first, a script of
// misbehaviour, and whose later connections are served correctly.
func newFakeNBDFirst(t *testing.T, size uint64, first func(f *fakeNBD, c net.Conn)) *fakeNBD {
	var f *fakeNBD
	f = newFakeNBD(t, size, func(c net.Conn, idx int) {
		if idx == 0 {
			first(f, c)
			return
		}
		f.serve(c)
	})
	return f
}

// reply writes a simple reply with errno to handle.
func reply(c net.Conn, handle uint64, errno uint32, data []byte) {
	var rep [16]byte
	binary.BigEndian.PutUint32(rep[0:], nbdSimpleMagic)
	binary.BigEndian.PutUint32(rep[4:], errno)
	binary.BigEndian.PutUint64(rep[8:], handle)
	c.Write(append(rep[:], data...))
}

func openFake(t *testing.T, f *fakeNBD, timeout time.Duration) *nbdDev {
	t.Helper()
	q := bh.NewQueue(2)
	t.Cleanup(q.Close)
	d, err := Open(f.uri(), OpenOptions{Queue: q, NBDTimeout: timeout, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d.(*nbdDev)
}

// waitDone collects n completions, failing the test after limit.
func waitDone(t *testing.T, done <-chan error, n int, limit time.Duration) []error {
	t.Helper()
	var errs []error
	deadline := time.After(limit)
	for len(errs) < n {
		select {
		case err := <-done:
			errs = append(errs, err)
		case <-deadline:
			t.Fatalf("only %d of %d requests completed within %v", len(errs), n, limit)
		}
	}
	return errs
}

// A write and a flush are in flight when the connection drops, and the
// first new connection drops too before answering: a third connection
// completes both.
func TestNBDResendSurvivesASecondDrop(t *testing.T) {
	var f *fakeNBD
	f = newFakeNBD(t, 1<<20, func(c net.Conn, idx int) {
		switch idx {
		case 0:
			readReq(c)
			readReq(c)
		case 1:
			readReq(c)
		default:
			f.serve(c)
		}
	})
	d := openFake(t, f, 30*time.Second)
	done := make(chan error, 2)
	d.Submit(&Request{Op: OpWrite, Bufs: [][]byte{make([]byte, 4096)}, Done: func(_ int64, err error) { done <- err }})
	d.Submit(&Request{Op: OpFlush, Done: func(_ int64, err error) { done <- err }})
	for _, err := range waitDone(t, done, 2, 10*time.Second) {
		if err != nil {
			t.Errorf("after two drops: %v", err)
		}
	}
	if f.conns.Load() < 3 {
		t.Errorf("%d connections; want at least 3", f.conns.Load())
	}
}

// A reply the protocol forbids fails the request it names with EIO, at
// once, instead of sending it again on connection after connection.
func TestNBDProtocolViolationFailsThePart(t *testing.T) {
	f := newFakeNBD(t, 1<<20, func(c net.Conn, idx int) {
		r, err := readReq(c)
		if err != nil {
			return
		}
		// A structured chunk of a type the protocol does not define (and
		// without the error bit), for the read's handle.
		var rep [20]byte
		binary.BigEndian.PutUint32(rep[0:], nbdStructMagic)
		binary.BigEndian.PutUint16(rep[4:], nbdReplyFlagDone)
		binary.BigEndian.PutUint16(rep[6:], 99)
		binary.BigEndian.PutUint64(rep[8:], r.handle)
		c.Write(rep[:])
		io.Copy(io.Discard, c)
	})
	d := openFake(t, f, 30*time.Second)
	done := make(chan error, 1)
	d.Submit(&Request{Op: OpRead, Bufs: [][]byte{make([]byte, 4096)}, Done: func(_ int64, err error) { done <- err }})
	if err := waitDone(t, done, 1, 5*time.Second)[0]; !errors.Is(err, syscall.EIO) {
		t.Fatalf("read answered in violation of the protocol: %v, want EIO", err)
	}
	if n := f.conns.Load(); n > 3 {
		t.Errorf("%d connections for one bad reply", n)
	}
}

// A server that accepts and hangs up at once, forever: the outage is one
// outage, and what is in flight fails with EIO at its deadline.
func TestNBDFlappingServerTimesOut(t *testing.T) {
	var up atomic.Bool
	up.Store(true)
	var f *fakeNBD
	f = newFakeNBD(t, 1<<20, func(c net.Conn, idx int) {
		if up.Load() {
			f.serve(c)
			return
		}
		readReq(c) // take a request, then hang up
	})
	d := openFake(t, f, 700*time.Millisecond)
	up.Store(false)
	d.wmu.Lock()
	d.conn.Close()
	d.wmu.Unlock()
	done := make(chan error, 1)
	start := time.Now()
	d.Submit(&Request{Op: OpRead, Bufs: [][]byte{make([]byte, 4096)}, Done: func(_ int64, err error) { done <- err }})
	if err := waitDone(t, done, 1, 10*time.Second)[0]; !errors.Is(err, syscall.EIO) {
		t.Fatalf("read against a server that always hangs up: %v, want EIO", err)
	}
	if el := time.Since(start); el > 6*time.Second {
		t.Errorf("failed after %v with a timeout of 700ms", el)
	}
}

// A writer blocked in a large write while the reader stops at a bad reply
// (so the server, whose replies back up, stops reading): the reader
// closes the connection, the writer gives up, and everything completes on
// the next connection.
func TestNBDBlockedWriterAndBadReply(t *testing.T) {
	f := newFakeNBDFirst(t, 64<<20, func(f *fakeNBD, c net.Conn) {
		r, err := readReq(c)
		if err != nil {
			return
		}
		time.Sleep(300 * time.Millisecond) // the client is now blocked writing
		var rep [16]byte
		binary.BigEndian.PutUint32(rep[0:], 0xdeadbeef)
		binary.BigEndian.PutUint64(rep[8:], r.handle)
		c.Write(rep[:])
		f.serve(c)
	})
	d := openFake(t, f, 10*time.Second)
	done := make(chan error, 20)
	d.Submit(&Request{Op: OpRead, Bufs: [][]byte{make([]byte, 4096)}, Done: func(_ int64, err error) { done <- err }})
	for i := 0; i < 8; i++ {
		d.Submit(&Request{Op: OpRead, Off: int64(i) << 20, Bufs: [][]byte{make([]byte, 1<<20)}, Done: func(_ int64, err error) { done <- err }})
	}
	go d.Submit(&Request{Op: OpWrite, Off: 16 << 20, Bufs: [][]byte{make([]byte, 32<<20)}, Done: func(_ int64, err error) { done <- err }})
	// A reply with a bad magic names no request that can be trusted, so
	// nothing fails: all is sent again on the next connection.
	for _, err := range waitDone(t, done, 10, 15*time.Second) {
		if err != nil {
			t.Errorf("after a bad reply: %v", err)
		}
	}
}

// ESHUTDOWN from a server on its way down ends the connection, and the
// request is sent again to the next server rather than failed.
func TestNBDShutdownReplyIsResent(t *testing.T) {
	f := newFakeNBDFirst(t, 1<<20, func(_ *fakeNBD, c net.Conn) {
		if r, err := readReq(c); err == nil {
			reply(c, r.handle, uint32(syscall.ESHUTDOWN), nil)
		}
	})
	d := openFake(t, f, 30*time.Second)
	if err := WriteAt(d, []byte("survives a graceful restart"), 0); err != nil {
		t.Fatalf("write refused with ESHUTDOWN: %v, want it sent again", err)
	}
	if d.Reconnects() != 1 {
		t.Errorf("%d reconnects, want 1", d.Reconnects())
	}
}

// Writes that completed on a connection that is lost before a flush may be
// gone with the server's cache: the first flush after the reconnect says
// so with EIO, and the next one succeeds.
func TestNBDLostUnflushedWritesFailTheNextFlush(t *testing.T) {
	f := newFakeNBDFirst(t, 1<<20, func(_ *fakeNBD, c net.Conn) {
		if r, err := readReq(c); err == nil { // the write: done
			reply(c, r.handle, 0, nil)
		}
		readReq(c) // the flush: hang up instead
	})
	d := openFake(t, f, 30*time.Second)
	if err := WriteAt(d, make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := Flush(d); !errors.Is(err, ErrWritesLost) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("flush after losing an unflushed write: %v, want ErrWritesLost (an EIO)", err)
	}
	if err := Flush(d); err != nil {
		t.Fatalf("the flush after that: %v", err)
	}
	// A write and flush on a healthy connection, then a loss: nothing was
	// left unflushed, so nothing is reported.
	if err := WriteAt(d, make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := Flush(d); err != nil {
		t.Fatal(err)
	}
	d.wmu.Lock()
	d.conn.Close()
	d.wmu.Unlock()
	if err := Flush(d); err != nil {
		t.Fatalf("flush after losing a clean connection: %v", err)
	}
}

// Requests submitted while the device has given up race with the server
// coming back: every request completes exactly once.
func TestNBDSubmitWhileFailedRace(t *testing.T) {
	var up atomic.Bool
	var f *fakeNBD
	f = newFakeNBD(t, 1<<20, func(c net.Conn, idx int) { f.serve(c) })
	refuse := func(idx int) bool { return idx > 0 && !up.Load() }
	f.refuse.Store(&refuse)
	d := openFake(t, f, 200*time.Millisecond)
	d.wmu.Lock()
	d.conn.Close()
	d.wmu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		d.wmu.Lock()
		failed := d.failed
		d.wmu.Unlock()
		if failed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the device never gave up")
		}
	}
	var wg sync.WaitGroup
	var dones, ok atomic.Int64
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ch := make(chan struct{})
				var once atomic.Int32
				d.Submit(&Request{Op: OpRead, Bufs: [][]byte{make([]byte, 4096)}, Done: func(_ int64, err error) {
					if once.Add(1) != 1 {
						t.Errorf("Done ran twice")
						return
					}
					dones.Add(1)
					if err == nil {
						ok.Add(1)
					}
					close(ch)
				}})
				select {
				case <-ch:
				case <-time.After(10 * time.Second):
					t.Errorf("a request never completed")
					return
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	up.Store(true)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	if ok.Load() == 0 {
		t.Errorf("%d completions, none successful after the server came back", dones.Load())
	}
}
