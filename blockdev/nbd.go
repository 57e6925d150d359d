package blockdev

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/irq"
	"golang.org/x/sys/unix"
)

// nbdDev is a Device served by an NBD server over TCP or a Unix socket: an
// NBD client of its own, so that no kernel NBD driver is needed.
//
// Requests go out from the requester's goroutine, under wmu, each part of
// a request in a slot whose index is the NBD handle; several parts ready at
// once (SubmitAll, or a request split at the server's payload limit) go
// out in one write. Replies are read by an irq line (nbdReader): in
// interrupt context it reads a reply's data straight into the request's
// buffers, records the outcome in the slot and posts the preallocated
// completion to the bhqueue, allocating nothing.
//
// A lost connection is retried for up to the configured timeout, with
// back-off (nbdDev.supervise). Every request still in flight is then sent
// again on the new connection: reads and writes are idempotent. A flush is
// sent again only once every write sent again before it has completed, so
// that a flush reported done covers those writes on the new connection.
// Past the timeout, requests fail with EIO until the server is back.
//
// Invariants: a slot is owned by exactly one of the free list, or the
// connection (armed: from its submitter arming it under wmu until the
// reader handles its last reply, or a reconnect that failed fails it).
// Slots are armed and sent only under wmu, so a reconnect, which resends
// under wmu, sees each armed slot exactly once.
type nbdDev struct {
	addr    *NBDAddress
	q       *bh.Queue
	exp     nbdExport
	ro      bool
	timeout time.Duration
	logf    func(format string, args ...any)

	slots []nbdSlot
	free  chan uint32

	wmu     sync.Mutex // guards the fields below, and writes to conn
	conn    net.Conn
	w       *bufio.Writer
	up      bool // conn is usable: submitters send
	failed  bool // the last reconnect timed out: requests fail at once
	closing bool // Close has begun: no more reconnects
	line    *irq.Line
	src     *nbdReader

	broken  chan struct{} // tells the supervisor the connection is lost
	stop    chan struct{} // closed by Close
	supDone chan struct{}
	reconns atomic.Uint64

	stats Stats

	life   sync.RWMutex // Submit holds it shared; Close exclusively
	closed bool
}

// nbdSlot is the preallocated state of one request part in flight; its
// index is the NBD handle's low half and its use count the high half, so a
// reply to an earlier use is recognised and refused.
type nbdSlot struct {
	dev   *nbdDev
	idx   uint32
	armed atomic.Uint32 // 1 while the connection owns the slot; orders the fields below
	seq   uint32        // uses of this slot, the handle's high half
	req   *Request
	cmd   uint16
	flags uint16
	off   int64
	n     uint32   // bytes of the part
	bufs  [][]byte // the part's buffers (reads and writes)
	// Reader state for a structured read: one more than the bytes still
	// due (0: no chunk yet), and the first error chunk's errno.
	left  uint32
	errno int32
}

func (s *nbdSlot) handle() uint64 { return uint64(s.seq)<<32 | uint64(s.idx) }

// NBDDepth is the default number of request parts in flight to a server.
const NBDDepth = 64

// openNBD connects to the export a names.
func openNBD(a *NBDAddress, opts OpenOptions) (*nbdDev, error) {
	timeout := opts.NBDTimeout
	if timeout <= 0 {
		timeout = DefaultNBDTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(timeout, 30*time.Second))
	defer cancel()
	conn, exp, err := nbdDial(ctx, a)
	if err != nil {
		return nil, err
	}
	ro := opts.ReadOnly || exp.flags&nbdTFlagReadOnly != 0
	depth := depthOr(opts.Depth, NBDDepth)
	d := &nbdDev{addr: a, q: opts.Queue, exp: exp, ro: ro, timeout: timeout, logf: opts.Logf,
		slots: make([]nbdSlot, depth), free: make(chan uint32, depth),
		broken: make(chan struct{}, 1), stop: make(chan struct{}), supDone: make(chan struct{})}
	if d.logf == nil {
		d.logf = func(string, ...any) {}
	}
	for i := range d.slots {
		d.slots[i].dev, d.slots[i].idx = d, uint32(i)
		d.free <- uint32(i)
	}
	d.wmu.Lock()
	d.attach(conn)
	d.wmu.Unlock()
	go d.supervise()
	return d, nil
}

// DefaultNBDTimeout is how long a lost connection is retried before
// requests fail with EIO.
const DefaultNBDTimeout = 60 * time.Second

// attach makes conn the device's connection and starts its reader.
// REQUIRES: wmu.
func (d *nbdDev) attach(conn net.Conn) {
	d.conn = conn
	d.w = bufio.NewWriterSize(conn, 256<<10)
	d.src = &nbdReader{dev: d, r: bufio.NewReaderSize(conn, 256<<10)}
	d.line = irq.Start("nbd "+d.addr.URI, d.src)
	d.up, d.failed = true, false
}

func (d *nbdDev) Size() int64     { return d.exp.size }
func (d *nbdDev) SectorSize() int { return 512 }
func (d *nbdDev) ReadOnly() bool  { return d.ro }

// Stats returns the device's counters.
func (d *nbdDev) Stats() StatsSnapshot { return d.stats.Snapshot() }

func (d *nbdDev) describe() string {
	s := fmt.Sprintf("NBD client of %s (%d slots, up to %d bytes per request", d.addr.URI, len(d.slots), d.exp.maxPayload)
	if d.exp.structured {
		s += ", structured replies"
	}
	if d.exp.flags&nbdTFlagSendFUA != 0 {
		s += ", FUA"
	}
	switch {
	case d.exp.flags&nbdTFlagSendZeros != 0:
		s += ", discard by write-zeroes"
	case d.exp.flags&nbdTFlagSendTrim != 0:
		s += ", discard by trim"
	}
	if d.addr.TLS {
		s += ", TLS"
	}
	return s + ")"
}

func (d *nbdDev) opError(op Op, off int64, err error) error {
	return fmt.Errorf("%s at %d on %s: %w", op, off, d.addr.URI, err)
}

// Reconnects counts the connections made after the first.
func (d *nbdDev) Reconnects() uint64 { return d.reconns.Load() }

// Submit sends r's parts, waiting for free slots when the connection has
// as many in flight as it may.
func (d *nbdDev) Submit(r *Request) { d.submitAll([]*Request{r}) }

func (d *nbdDev) submitAll(rs []*Request) {
	d.life.RLock()
	defer d.life.RUnlock()
	var parts []*nbdSlot
	live := make([]*Request, 0, len(rs))
	for _, r := range rs {
		r.start, r.stats, r.owner = nowNs(), &d.stats, d
		r.parts, r.moved, r.fail = 1, 0, 0
		if d.closed {
			finishNow(d.q, r, 0, fmt.Errorf("%s on %s: device closed", r.Op, d.addr.URI))
			continue
		}
		if err := Check(r, d.exp.size, d.ro); err != nil {
			finishNow(d.q, r, 0, err)
			continue
		}
		d.prepare(r, &parts)
		live = append(live, r)
	}
	d.send(parts)
	for _, r := range live {
		d.dropPart(r) // the submitter's own reference
	}
}

// prepare takes a slot for each part of r and appends them to *parts.
// A request with nothing to send completes when its submitter lets go.
func (d *nbdDev) prepare(r *Request, parts *[]*nbdSlot) {
	switch r.Op {
	case OpRead, OpWrite:
		if r.Op == OpWrite && r.FUA && d.exp.flags&nbdTFlagSendFUA == 0 && d.exp.flags&nbdTFlagSendFlush != 0 {
			d.fuaByFlush(r)
		}
		bufs, off := r.Bufs, r.Off
		for len(bufs) > 0 {
			var part [][]byte
			part, bufs = cutBufs(bufs, int64(d.exp.maxPayload))
			s := d.take(r, parts)
			s.cmd, s.off, s.bufs, s.n = nbdCmdRead, off, part, uint32(lenOf(part))
			if r.Op == OpWrite {
				s.cmd = nbdCmdWrite
				if r.FUA && d.exp.flags&nbdTFlagSendFUA != 0 {
					s.flags = nbdCmdFlagFUA
				}
			}
			off += int64(s.n)
			*parts = append(*parts, s)
		}
	case OpFlush:
		if d.ro || d.exp.flags&nbdTFlagSendFlush == 0 {
			break // nothing is cached that a flush could make durable
		}
		s := d.take(r, parts)
		s.cmd = nbdCmdFlush
		*parts = append(*parts, s)
	case OpDiscard:
		// A discarded range reads back as zeros from every other backend
		// (a punched hole). WRITE_ZEROES promises that and lets the server
		// free the space; a TRIM does not promise zeros, so it is only the
		// fallback, and without either the discard is a hint dropped.
		cmd := uint16(nbdCmdZeros)
		switch {
		case d.exp.flags&nbdTFlagSendZeros != 0:
		case d.exp.flags&nbdTFlagSendTrim != 0:
			cmd = nbdCmdTrim
		default:
			return
		}
		for off, left := r.Off, r.Length; left > 0; {
			n := min(left, int64(d.exp.maxPayload))
			s := d.take(r, parts)
			s.cmd, s.off, s.n = cmd, off, uint32(n)
			off, left = off+n, left-n
			*parts = append(*parts, s)
		}
	}
}

// fuaByFlush makes a FUA write to a server without FUA into a write and,
// once it is done, a flush; r's Done gets the write's count and the first
// error. It runs on the submit path, where allocating is fine.
func (d *nbdDev) fuaByFlush(r *Request) {
	done := r.Done
	r.FUA = false
	r.Done = func(n int64, err error) {
		if err != nil {
			done(n, err)
			return
		}
		d.Submit(&Request{Op: OpFlush, Done: func(_ int64, ferr error) { done(n, ferr) }})
	}
}

// cutBufs splits bufs after max bytes.
func cutBufs(bufs [][]byte, max int64) (head, tail [][]byte) {
	var n int64
	for i, b := range bufs {
		if n+int64(len(b)) > max {
			head = append(append([][]byte(nil), bufs[:i]...), b[:max-n])
			tail = append([][]byte{b[max-n:]}, bufs[i+1:]...)
			return head, tail
		}
		n += int64(len(b))
	}
	return bufs, nil
}

// take gives r a free slot, waiting for one. Parts taken but not sent yet
// (pending) are sent before it waits: they may hold every slot, and a slot
// comes back only when a reply does.
func (d *nbdDev) take(r *Request, pending *[]*nbdSlot) *nbdSlot {
	var i uint32
	select {
	case i = <-d.free:
	default:
		d.send(*pending)
		*pending = (*pending)[:0]
		i = <-d.free
	}
	s := &d.slots[i]
	s.seq++
	s.req, s.flags, s.off, s.n, s.bufs, s.left, s.errno = r, 0, 0, 0, nil, 0, 0
	atomic.AddInt32(&r.parts, 1)
	return s
}

// send arms parts and writes them to the connection in one go. While the
// connection is down they stay armed and the reconnect sends them; once a
// reconnect has given up they fail at once.
func (d *nbdDev) send(parts []*nbdSlot) {
	if len(parts) == 0 {
		return
	}
	d.wmu.Lock()
	if d.failed {
		d.wmu.Unlock()
		for _, s := range parts {
			s.armed.Store(1)
			d.finish(s, int32(unix.EIO))
		}
		return
	}
	for _, s := range parts {
		s.armed.Store(1)
	}
	if d.up {
		for _, s := range parts {
			d.write(s)
		}
		d.flushLocked()
	}
	d.wmu.Unlock()
}

// write buffers one request. REQUIRES: wmu, d.up.
func (d *nbdDev) write(s *nbdSlot) {
	var h [28]byte
	binary.BigEndian.PutUint32(h[0:], nbdReqMagic)
	binary.BigEndian.PutUint16(h[4:], s.flags)
	binary.BigEndian.PutUint16(h[6:], s.cmd)
	binary.BigEndian.PutUint64(h[8:], s.handle())
	binary.BigEndian.PutUint64(h[16:], uint64(s.off))
	binary.BigEndian.PutUint32(h[24:], s.n)
	d.w.Write(h[:])
	if s.cmd == nbdCmdWrite {
		for _, b := range s.bufs {
			d.w.Write(b)
		}
	}
}

// flushLocked pushes what write buffered to the socket; a failure marks the
// connection lost. REQUIRES: wmu.
func (d *nbdDev) flushLocked() {
	if err := d.w.Flush(); err != nil && d.up {
		d.logf("tfsmount: %s: connection lost while sending: %v", d.addr.URI, err)
		d.markBroken()
	}
}

// markBroken stops sending on the connection and wakes the supervisor.
// REQUIRES: wmu.
func (d *nbdDev) markBroken() {
	d.up = false
	d.conn.Close() // the reader's Wait returns, and its line stops
	select {
	case d.broken <- struct{}{}:
	default:
	}
}

// finish ends one part with errno (0: success) and frees its slot. It runs
// in interrupt context (the reader) or on the supervisor, never twice for
// one arming.
func (d *nbdDev) finish(s *nbdSlot, errno int32) {
	r := s.req
	if errno != 0 {
		atomic.CompareAndSwapInt32(&r.fail, 0, errno)
	} else if s.cmd == nbdCmdRead || s.cmd == nbdCmdWrite {
		atomic.AddInt64(&r.moved, int64(s.n))
	}
	s.req, s.bufs = nil, nil
	s.armed.Store(0)
	d.free <- s.idx
	d.dropPart(r)
}

// dropPart ends one part of r (or the submitter's own reference); the last
// one counts the request and posts its completion.
func (d *nbdDev) dropPart(r *Request) {
	if atomic.AddInt32(&r.parts, -1) != 0 {
		return
	}
	n := atomic.LoadInt64(&r.moved)
	r.stats.record(r.Op, n, atomic.LoadInt32(&r.fail) != 0, r.start)
	d.q.Post((*requestDone)(r))
}

// supervise reconnects after a lost connection, until Close.
func (d *nbdDev) supervise() {
	defer close(d.supDone)
	for {
		select {
		case <-d.stop:
			return
		case <-d.broken:
		}
		d.reconnect()
	}
}

// reconnect replaces a lost connection and sends again what was in flight,
// or, past the timeout, fails it and keeps trying in the background.
func (d *nbdDev) reconnect() {
	d.wmu.Lock()
	if d.closing {
		d.wmu.Unlock()
		return
	}
	d.up = false
	d.conn.Close()
	line, src := d.line, d.src
	d.wmu.Unlock()
	<-line.Done() // no reader runs from here until attach
	select {
	case <-d.broken: // the old reader's own alarm about the same loss
	default:
	}
	why := src.err
	if why == nil {
		why = line.Err()
	}
	d.logf("tfsmount: %s: connection lost (%v); reconnecting for up to %v", d.addr.URI, why, d.timeout)
	start := time.Now()
	deadline := start.Add(d.timeout)
	backoff := 50 * time.Millisecond
	gaveUp := false
	for {
		wait := time.Until(deadline)
		if gaveUp {
			wait = 10 * time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(min(wait, 10*time.Second), time.Second))
		conn, exp, err := nbdDial(ctx, d.addr)
		cancel()
		if err == nil && exp.size != d.exp.size {
			conn.Close()
			err = fmt.Errorf("the export is now %d bytes, not %d", exp.size, d.exp.size)
		}
		if err == nil {
			if !d.resume(conn) {
				return
			}
			d.reconns.Add(1)
			d.logf("tfsmount: %s: reconnected after %v", d.addr.URI, time.Since(start).Round(time.Millisecond))
			return
		}
		if !gaveUp && time.Now().After(deadline) {
			gaveUp = true
			d.logf("tfsmount: %s: no connection after %v (%v): requests fail with EIO until the server is back", d.addr.URI, d.timeout, err)
			d.failAll()
		}
		select {
		case <-d.stop:
			if !gaveUp {
				d.failAll()
			}
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// failAll fails every armed slot with EIO and makes new requests fail at
// once until a reconnect succeeds.
func (d *nbdDev) failAll() {
	d.wmu.Lock()
	d.failed = true
	var armed []*nbdSlot
	for i := range d.slots {
		if s := &d.slots[i]; s.armed.Load() == 1 {
			armed = append(armed, s)
		}
	}
	d.wmu.Unlock()
	for _, s := range armed {
		d.finish(s, int32(unix.EIO))
	}
}

// resume attaches conn and sends every armed slot again: reads, writes
// and trims at once, flushes once those writes are done. It reports false
// (and closes conn) if Close has begun.
func (d *nbdDev) resume(conn net.Conn) bool {
	d.wmu.Lock()
	if d.closing {
		d.wmu.Unlock()
		conn.Close()
		return false
	}
	var flushes, others []*nbdSlot
	for i := range d.slots {
		s := &d.slots[i]
		if s.armed.Load() != 1 {
			continue
		}
		s.left, s.errno = 0, 0
		if s.cmd == nbdCmdFlush {
			flushes = append(flushes, s)
		} else {
			others = append(others, s)
		}
	}
	d.attach(conn)
	for _, s := range others {
		d.write(s)
	}
	d.flushLocked()
	d.wmu.Unlock()
	if len(flushes) == 0 {
		return true
	}
	// A slot seen free once is done: whatever arms it later is newer.
	for _, s := range others {
		for s.armed.Load() == 1 {
			select {
			case <-d.stop:
				return true
			case <-time.After(time.Millisecond):
			}
			d.wmu.Lock()
			up := d.up
			d.wmu.Unlock()
			if !up {
				return true // lost again: the next reconnect sends the flushes
			}
		}
	}
	d.wmu.Lock()
	if d.up {
		for _, s := range flushes {
			d.write(s)
		}
		d.flushLocked()
	}
	d.wmu.Unlock()
	return true
}

// Close waits for every request in flight, says goodbye to the server and
// closes the connection.
func (d *nbdDev) Close() error {
	d.life.Lock()
	if d.closed {
		d.life.Unlock()
		return nil
	}
	d.closed = true
	d.life.Unlock()
	for range d.slots {
		<-d.free
	}
	d.wmu.Lock()
	d.closing = true
	if d.up {
		var h [28]byte
		binary.BigEndian.PutUint32(h[0:], nbdReqMagic)
		binary.BigEndian.PutUint16(h[6:], nbdCmdDisc)
		d.w.Write(h[:])
		d.w.Flush()
	}
	d.up = false
	d.conn.Close()
	line := d.line
	d.wmu.Unlock()
	close(d.stop)
	<-d.supDone
	<-line.Done()
	return nil
}

// nbdReader is the interrupt source of one connection: Wait reads the
// next reply header, Handle consumes the reply.
type nbdReader struct {
	dev *nbdDev
	r   *bufio.Reader
	hdr [32]byte
	// scratch takes payload bytes nobody wants (error messages, replies to
	// stale handles) without allocating.
	scratch [4096]byte
	err     error // why the line stopped, when it was a protocol error
}

// Wait blocks until a reply header has arrived. When the connection ends
// it tells the supervisor, and the line stops.
func (s *nbdReader) Wait() error {
	_, err := io.ReadFull(s.r, s.hdr[:4])
	if err == nil {
		n := 16
		if binary.BigEndian.Uint32(s.hdr[:4]) == nbdStructMagic {
			n = 20
		}
		_, err = io.ReadFull(s.r, s.hdr[4:n])
	}
	if err != nil {
		s.dev.signalBroken()
	}
	return err
}

// Handle consumes one reply. A reply the protocol does not allow ends the
// connection, which the supervisor then replaces.
func (s *nbdReader) Handle() (int, bool) {
	var err error
	if binary.BigEndian.Uint32(s.hdr[:4]) == nbdStructMagic {
		err = s.structured()
	} else {
		err = s.simple()
	}
	if err != nil {
		s.err = err
		s.dev.logf("tfsmount: %s: %v", s.dev.addr.URI, err)
		s.dev.signalBroken()
		return 1, true
	}
	return 1, false
}

// signalBroken asks the supervisor to replace the connection; it may run
// in interrupt context, so it takes no lock: closing is left to reconnect.
func (d *nbdDev) signalBroken() {
	select {
	case d.broken <- struct{}{}:
	default:
	}
}

var errNBDProtocol = errors.New("NBD protocol violation")

// slotFor finds the armed slot a reply's handle names.
func (s *nbdReader) slotFor(handle uint64) *nbdSlot {
	idx := uint32(handle)
	if int(idx) >= len(s.dev.slots) {
		return nil
	}
	sl := &s.dev.slots[idx]
	if sl.armed.Load() != 1 || sl.handle() != handle {
		return nil
	}
	return sl
}

func (s *nbdReader) simple() error {
	if m := binary.BigEndian.Uint32(s.hdr[:4]); m != nbdSimpleMagic {
		return fmt.Errorf("%w: reply magic %#x", errNBDProtocol, m)
	}
	errno := nbdErrno(binary.BigEndian.Uint32(s.hdr[4:]))
	sl := s.slotFor(binary.BigEndian.Uint64(s.hdr[8:]))
	if sl == nil {
		return fmt.Errorf("%w: reply to handle %#x, which is not in flight", errNBDProtocol, binary.BigEndian.Uint64(s.hdr[8:]))
	}
	if sl.cmd == nbdCmdRead && errno == 0 {
		if s.dev.exp.structured {
			return fmt.Errorf("%w: simple reply to a read after structured replies were agreed", errNBDProtocol)
		}
		for _, b := range sl.bufs {
			if _, err := io.ReadFull(s.r, b); err != nil {
				return err
			}
		}
	}
	s.dev.finish(sl, errno)
	return nil
}

func (s *nbdReader) structured() error {
	flags := binary.BigEndian.Uint16(s.hdr[4:])
	typ := binary.BigEndian.Uint16(s.hdr[6:])
	handle := binary.BigEndian.Uint64(s.hdr[8:])
	n := binary.BigEndian.Uint32(s.hdr[16:])
	sl := s.slotFor(handle)
	if sl == nil {
		return fmt.Errorf("%w: reply to handle %#x, which is not in flight", errNBDProtocol, handle)
	}
	if sl.cmd == nbdCmdRead && sl.left == 0 && sl.errno == 0 {
		sl.left = sl.n + 1 // one more than due: set on the first chunk
	}
	switch typ {
	case nbdReplyTypeNone:
		if n != 0 {
			return fmt.Errorf("%w: NONE chunk with %d bytes", errNBDProtocol, n)
		}
	case nbdReplyTypeOffsetData, nbdReplyTypeOffsetHole:
		if sl.cmd != nbdCmdRead || n < 8 {
			return fmt.Errorf("%w: data chunk of %d bytes for command %d", errNBDProtocol, n, sl.cmd)
		}
		if _, err := io.ReadFull(s.r, s.hdr[20:28]); err != nil {
			return err
		}
		off := int64(binary.BigEndian.Uint64(s.hdr[20:])) - sl.off
		var size int64
		if typ == nbdReplyTypeOffsetHole {
			if n != 12 {
				return fmt.Errorf("%w: hole chunk of %d bytes", errNBDProtocol, n)
			}
			if _, err := io.ReadFull(s.r, s.hdr[28:32]); err != nil {
				return err
			}
			size = int64(binary.BigEndian.Uint32(s.hdr[28:]))
		} else {
			size = int64(n) - 8
		}
		if off < 0 || size > int64(sl.n)-off || uint32(size) >= sl.left {
			return fmt.Errorf("%w: chunk [%d,+%d) outside the %d-byte read", errNBDProtocol, off, size, sl.n)
		}
		if err := s.fill(sl.bufs, off, size, typ == nbdReplyTypeOffsetData); err != nil {
			return err
		}
		sl.left -= uint32(size)
	case nbdReplyTypeError, nbdReplyTypeErrorOffset:
		if n < 6 {
			return fmt.Errorf("%w: error chunk of %d bytes", errNBDProtocol, n)
		}
		if _, err := io.ReadFull(s.r, s.hdr[20:26]); err != nil {
			return err
		}
		if sl.errno == 0 {
			sl.errno = nbdErrno(binary.BigEndian.Uint32(s.hdr[20:]))
			if sl.errno == 0 {
				sl.errno = int32(unix.EIO)
			}
		}
		if err := s.discard(int64(n) - 6); err != nil {
			return err
		}
	default:
		if typ&nbdReplyTypeErrorBit == 0 {
			return fmt.Errorf("%w: unknown reply chunk type %d", errNBDProtocol, typ)
		}
		if sl.errno == 0 {
			sl.errno = int32(unix.EIO)
		}
		if err := s.discard(int64(n)); err != nil {
			return err
		}
	}
	if flags&nbdReplyFlagDone == 0 {
		return nil
	}
	errno := sl.errno
	if errno == 0 && sl.cmd == nbdCmdRead && sl.left != 1 {
		return fmt.Errorf("%w: read of %d bytes done with %d bytes missing", errNBDProtocol, sl.n, sl.left-1)
	}
	s.dev.finish(sl, errno)
	return nil
}

// fill reads size bytes at off of a read's buffers from the socket, or
// zeroes them for a hole.
func (s *nbdReader) fill(bufs [][]byte, off, size int64, data bool) error {
	for _, b := range bufs {
		if size == 0 {
			break
		}
		if off >= int64(len(b)) {
			off -= int64(len(b))
			continue
		}
		part := b[off:min(int64(len(b)), off+size)]
		if data {
			if _, err := io.ReadFull(s.r, part); err != nil {
				return err
			}
		} else {
			clear(part)
		}
		size -= int64(len(part))
		off = 0
	}
	return nil
}

func (s *nbdReader) discard(n int64) error {
	for n > 0 {
		k, err := io.ReadFull(s.r, s.scratch[:min(n, int64(len(s.scratch)))])
		if err != nil {
			return err
		}
		n -= int64(k)
	}
	return nil
}

// nbdErrno maps an NBD error value to an errno: the protocol's values are
// Linux's.
func nbdErrno(e uint32) int32 {
	switch e {
	case 0:
		return 0
	case uint32(unix.EPERM), uint32(unix.EIO), uint32(unix.ENOMEM), uint32(unix.EINVAL),
		uint32(unix.ENOSPC), uint32(unix.EOVERFLOW), uint32(unix.ENOTSUP), uint32(unix.ESHUTDOWN):
		return int32(e)
	}
	return int32(unix.EIO)
}
