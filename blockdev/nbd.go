package blockdev

import (
	"bufio"
	"context"
	"crypto/tls"
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
// A lost connection is retried with back-off (nbdDev.supervise) until the
// configured timeout has passed without a connection that works. Every
// request still in flight is then sent again on the new connection: reads,
// writes and trims may be repeated, and a flush covers only writes that
// had completed when it was sent. Writes that completed on the lost
// connection and were not flushed there may be gone with the server's
// cache, and the client no longer has their data: the first flush to
// complete after such a loss reports ErrWritesLost, so that no fsync
// claims them and the filesystem stops before it builds on them.
// Past the timeout, requests fail with EIO until the server is back.
//
// Invariants: a slot is owned by exactly one of the free list, a submitter
// filling it, or the connection (armed: from arming under wmu until the
// reader handles its last reply, or until failAll fails it while no reader
// runs). Slots are armed and sent only under wmu, so a reconnect, which
// resends under wmu while no reader runs, sees each armed slot exactly
// once. Whoever finds the connection broken closes it before telling the
// supervisor, so no writer stays blocked in it holding wmu.
type nbdDev struct {
	addr    *NBDAddress
	q       *bh.Queue
	exp     nbdExport // as at open; a reconnect must find the same
	ro      bool
	timeout time.Duration
	logf    func(format string, args ...any)

	slots []nbdSlot
	free  chan uint32

	wmu  sync.Mutex // guards the fields below, and writes to conn
	conn net.Conn
	// tlsOut batches what goes out over TLS into records; a plain socket
	// takes each batch with one writev straight from the caller's buffers.
	tlsOut  *bufio.Writer
	up      bool // conn is usable: submitters send
	failed  bool // the outage outlasted the timeout: requests fail at once
	closing bool // Close has begun: no more reconnects
	line    *irq.Line
	src     *nbdReader

	// Durability across reconnects (see the type comment): writes that
	// completed on the current connection without FUA, the most of those a
	// completed flush has covered, and whether a lost connection left
	// unflushed writes behind.
	wdone, flushed atomic.Uint64
	lost           atomic.Bool
	// progress: the current connection has delivered a valid reply, so an
	// outage that follows is a new one.
	progress atomic.Bool

	// The supervisor's own state.
	broken  chan struct{} // tells the supervisor the connection is lost
	ctx     context.Context
	cancel  context.CancelFunc // Close: ends dials and back-off waits
	supDone chan struct{}
	outage  time.Time     // when the current outage began (zero: none)
	backoff time.Duration // before the next attempt
	gaveUp  bool          // this outage already failed what was in flight
	reconns atomic.Uint64

	emulated sync.WaitGroup // FUA writes done as write then flush, until their flush is sent
	stats    Stats

	life      sync.RWMutex // Submit holds it shared; Close exclusively
	closed    bool
	closeOnce sync.Once
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
	// covers: for a flush, the connection's completed writes when it was
	// sent (see nbdDev.wdone).
	covers uint64
	hdr    [28]byte // the request header, while it is being sent (under wmu)
	// Reader state for a structured read: one more than the bytes still
	// due (0: no chunk yet), and the first error chunk's errno.
	left  uint32
	errno int32
}

func (s *nbdSlot) handle() uint64 { return uint64(s.seq)<<32 | uint64(s.idx) }

// NBDDepth is the default number of request parts in flight to a server.
const NBDDepth = 64

// DefaultNBDTimeout is how long a lost connection is retried before
// requests fail with EIO.
const DefaultNBDTimeout = 60 * time.Second

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
		broken: make(chan struct{}, 1), supDone: make(chan struct{})}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	if d.logf == nil {
		d.logf = func(string, ...any) {}
	}
	for i := range d.slots {
		d.slots[i].dev, d.slots[i].idx = d, uint32(i)
		d.free <- uint32(i)
	}
	d.wmu.Lock()
	d.attach(conn, exp.structured)
	d.wmu.Unlock()
	go d.supervise()
	return d, nil
}

// attach makes conn the device's connection and starts its reader.
// REQUIRES: wmu, and no reader running.
func (d *nbdDev) attach(conn net.Conn, structured bool) {
	d.conn = conn
	d.tlsOut = nil
	if _, ok := conn.(*tls.Conn); ok {
		d.tlsOut = bufio.NewWriterSize(conn, 256<<10)
	}
	d.src = &nbdReader{dev: d, conn: conn, r: bufio.NewReaderSize(conn, 256<<10), structured: structured}
	d.wdone.Store(0)
	d.flushed.Store(0)
	d.progress.Store(false)
	d.line = irq.StartPolled("nbd "+d.addr.URI, d.src)
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
	if d.closed {
		for _, r := range rs {
			r.start, r.stats, r.owner = nowNs(), &d.stats, d
			finishNow(d.q, r, 0, fmt.Errorf("%s on %s: device closed", r.Op, d.addr.URI))
		}
		return
	}
	d.submitLocked(rs)
}

// submitLocked is submitAll once the device is known open; the second step
// of an emulated FUA write comes here directly, since Close waits for it.
func (d *nbdDev) submitLocked(rs []*Request) {
	var parts []*nbdSlot
	live := make([]*Request, 0, len(rs))
	for _, r := range rs {
		if err := Check(r, d.exp.size, d.ro); err != nil {
			r.start, r.stats, r.owner = nowNs(), &d.stats, d
			finishNow(d.q, r, 0, err)
			continue
		}
		if r.Op == OpWrite && r.FUA && d.exp.flags&nbdTFlagSendFUA == 0 && d.exp.flags&nbdTFlagSendFlush != 0 {
			r = d.fuaByFlush(r)
		}
		r.start, r.stats, r.owner = nowNs(), &d.stats, d
		r.parts, r.moved, r.fail = 1, 0, 0
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
		bufs, off := r.Bufs, r.Off
		for len(bufs) > 0 {
			var part [][]byte
			part, bufs = cutBufs(bufs, int64(d.exp.maxPayload))
			n := lenOf(part)
			if n == 0 {
				continue // empty buffers: nothing to ask for
			}
			s := d.take(r, parts)
			s.cmd, s.off, s.bufs, s.n = nbdCmdRead, off, part, uint32(n)
			if r.Op == OpWrite {
				s.cmd = nbdCmdWrite
				if r.FUA && d.exp.flags&nbdTFlagSendFUA != 0 {
					s.flags = nbdCmdFlagFUA
				}
			}
			off += n
			*parts = append(*parts, s)
		}
	case OpFlush:
		if d.ro || d.exp.flags&nbdTFlagSendFlush == 0 {
			return // nothing is cached that a flush could make durable
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

// fuaByFlush stands in for a FUA write to a server without FUA: a plain
// write of the same buffers and, once it is done, a flush; r's Done gets
// the write's count and the first error. r itself is left as it was.
func (d *nbdDev) fuaByFlush(r *Request) *Request {
	d.emulated.Add(1)
	return &Request{Op: OpWrite, Off: r.Off, Bufs: r.Bufs, Done: func(n int64, err error) {
		if err != nil {
			d.emulated.Done()
			r.Done(n, err)
			return
		}
		flush := &Request{Op: OpFlush, Done: func(_ int64, ferr error) {
			if ferr != nil {
				n = 0
			}
			r.Done(n, ferr)
		}}
		d.submitLocked([]*Request{flush})
		d.emulated.Done()
	}}
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
	s.req, s.flags, s.off, s.n, s.bufs, s.covers, s.left, s.errno = r, 0, 0, 0, nil, 0, 0, 0
	atomic.AddInt32(&r.parts, 1)
	return s
}

// send arms parts and writes them to the connection in one go. While the
// connection is down they stay armed and the reconnect sends them; once
// the outage has outlasted the timeout they fail at once.
func (d *nbdDev) send(parts []*nbdSlot) {
	if len(parts) == 0 {
		return
	}
	d.wmu.Lock()
	if d.failed {
		d.wmu.Unlock()
		// Never armed: no reconnect can see them.
		for _, s := range parts {
			d.finish(s, int32(unix.EIO))
		}
		return
	}
	for _, s := range parts {
		s.armed.Store(1)
	}
	if d.up {
		d.writeLocked(parts)
	}
	d.wmu.Unlock()
}

// writeLocked sends the requests of parts, headers and write payloads, in
// one gathered write; a failure marks the connection lost. REQUIRES: wmu,
// d.up.
func (d *nbdDev) writeLocked(parts []*nbdSlot) {
	out := make(net.Buffers, 0, 2*len(parts))
	for _, s := range parts {
		h := &s.hdr
		binary.BigEndian.PutUint32(h[0:], nbdReqMagic)
		binary.BigEndian.PutUint16(h[4:], s.flags)
		binary.BigEndian.PutUint16(h[6:], s.cmd)
		binary.BigEndian.PutUint64(h[8:], s.handle())
		binary.BigEndian.PutUint64(h[16:], uint64(s.off))
		binary.BigEndian.PutUint32(h[24:], s.n)
		if s.cmd == nbdCmdFlush {
			s.covers = d.wdone.Load()
		}
		out = append(out, h[:])
		if s.cmd == nbdCmdWrite {
			out = append(out, s.bufs...)
		}
	}
	var err error
	if d.tlsOut != nil {
		if _, err = out.WriteTo(d.tlsOut); err == nil {
			err = d.tlsOut.Flush()
		}
	} else {
		_, err = out.WriteTo(d.conn)
	}
	if err != nil {
		d.up = false
		d.conn.Close() // the reader's Wait returns and tells the supervisor
	}
}

// finish ends one part with errno (0: success) and frees its slot. It runs
// in interrupt context (the reader), or where no reader can see the slot
// (a submitter that never armed it, failAll), never twice for one use.
func (d *nbdDev) finish(s *nbdSlot, errno int32) {
	r := s.req
	if errno == 0 {
		switch s.cmd {
		case nbdCmdWrite:
			if s.flags&nbdCmdFlagFUA == 0 {
				d.wdone.Add(1)
			}
		case nbdCmdFlush:
			for f := d.flushed.Load(); f < s.covers && !d.flushed.CompareAndSwap(f, s.covers); f = d.flushed.Load() {
			}
			if d.lost.CompareAndSwap(true, false) {
				errno = failLost // writes this flush must cover were lost with a connection
			}
		}
	}
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
		case <-d.ctx.Done():
			return
		case <-d.broken:
		}
		d.reconnect()
	}
}

// reconnect replaces a lost connection and sends again what was in flight.
// An outage lasts until a connection delivers a valid reply: one that
// breaks again before that (a server that accepts and hangs up, or answers
// with something the protocol forbids) continues the same outage, its
// back-off and its deadline. Past the deadline everything in flight fails,
// and new requests fail at once until a connection is made.
func (d *nbdDev) reconnect() {
	d.wmu.Lock()
	if d.closing {
		d.wmu.Unlock()
		return
	}
	d.up = false
	conn, line, src := d.conn, d.line, d.src
	d.wmu.Unlock()
	conn.Close()
	<-line.Done() // no reader runs from here until attach
	select {
	case <-d.broken: // an alarm about the same loss
	default:
	}
	if d.wdone.Load() > d.flushed.Load() {
		d.lost.Store(true)
	}
	why := src.err
	if why == nil {
		why = line.Err()
	}
	if d.progress.Load() || d.outage.IsZero() {
		d.outage, d.backoff, d.gaveUp = time.Now(), 50*time.Millisecond, false
		d.logf("tfsmount: %s: connection lost (%v); reconnecting for up to %v", d.addr.URI, why, d.timeout)
	} else if d.gaveUp {
		d.failAll() // what the short-lived connection took with it
	}
	deadline := d.outage.Add(d.timeout)
	for attempt := 1; ; attempt++ {
		if !d.gaveUp && !time.Now().Before(deadline) {
			d.gaveUp = true
			d.logf("tfsmount: %s: no working connection for %v: requests fail with EIO until the server is back", d.addr.URI, d.timeout)
			d.failAll()
		}
		select {
		case <-d.ctx.Done():
			if !d.gaveUp {
				d.failAll()
			}
			return
		case <-time.After(d.backoff):
		}
		d.backoff = min(2*d.backoff, 2*time.Second)
		wait := time.Until(deadline)
		if d.gaveUp || wait < time.Second {
			wait = 10 * time.Second
		}
		ctx, cancel := context.WithTimeout(d.ctx, min(wait, 10*time.Second))
		conn, exp, err := nbdDial(ctx, d.addr)
		cancel()
		if err == nil {
			if err = d.exp.sameAs(exp); err != nil {
				conn.Close()
			}
		}
		if err == nil {
			if d.resume(conn, exp.structured) {
				d.logf("tfsmount: %s: connected again after %v", d.addr.URI, time.Since(d.outage).Round(time.Millisecond))
			}
			return
		}
		if attempt&(attempt-1) == 0 { // the 1st, 2nd, 4th, 8th... failure
			d.logf("tfsmount: %s: reconnect attempt %d: %v", d.addr.URI, attempt, err)
		}
	}
}

// sameAs reports whether the export a reconnect found is the one the
// device was opened on: size, limits and the commands it takes.
func (e nbdExport) sameAs(n nbdExport) error {
	const kept = nbdTFlagReadOnly | nbdTFlagSendFlush | nbdTFlagSendFUA | nbdTFlagSendTrim | nbdTFlagSendZeros
	if n.size != e.size || n.maxPayload != e.maxPayload || n.minBlock != e.minBlock || n.flags&kept != e.flags&kept {
		return fmt.Errorf("the export changed (%d bytes, flags %#x, at most %d per request; was %d, %#x, %d)",
			n.size, n.flags, n.maxPayload, e.size, e.flags, e.maxPayload)
	}
	return nil
}

// failAll fails every armed slot with EIO and makes new requests fail at
// once until a reconnect succeeds. REQUIRES: no reader running.
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

// resume attaches conn and sends every armed slot again. It reports false
// (and closes conn) if Close has begun.
func (d *nbdDev) resume(conn net.Conn, structured bool) bool {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.closing {
		conn.Close()
		return false
	}
	var again []*nbdSlot
	for i := range d.slots {
		if s := &d.slots[i]; s.armed.Load() == 1 {
			s.left, s.errno = 0, 0
			again = append(again, s)
		}
	}
	// Counted before anything is sent again, so that a caller woken by a
	// resent request already sees the reconnect.
	d.reconns.Add(1)
	d.attach(conn, structured)
	if len(again) > 0 {
		d.writeLocked(again)
	}
	return true
}

// Close waits for every request in flight, says goodbye to the server and
// closes the connection.
func (d *nbdDev) Close() error {
	d.closeOnce.Do(func() {
		d.life.Lock()
		d.closed = true
		d.life.Unlock()
		d.emulated.Wait()
		for range d.slots {
			<-d.free
		}
		d.wmu.Lock()
		d.closing = true
		if d.up {
			d.conn.SetWriteDeadline(time.Now().Add(time.Second))
			d.writeLocked([]*nbdSlot{{cmd: nbdCmdDisc}})
		}
		d.up = false
		d.conn.Close()
		line := d.line
		d.wmu.Unlock()
		d.cancel()
		<-d.supDone
		<-line.Done()
	})
	return nil
}

// nbdReader is the interrupt source of one connection: Wait reads the
// next reply header, Handle consumes the reply.
type nbdReader struct {
	dev        *nbdDev
	conn       net.Conn
	r          *bufio.Reader
	structured bool // this connection agreed to structured replies
	hdr        [32]byte
	// scratch takes payload bytes nobody wants (error messages) without
	// allocating.
	scratch [4096]byte
	// err: why the connection must end, found by Handle; the next Wait,
	// outside interrupt context, closes it and tells the supervisor.
	err error
}

// Wait blocks until a reply header has arrived. When the connection ends,
// or Handle found it must, it closes the connection (a writer blocked in
// it gives up) and tells the supervisor, and the line stops.
func (s *nbdReader) Wait() error {
	err := s.err
	if err == nil {
		if _, err = io.ReadFull(s.r, s.hdr[:4]); err == nil {
			n := 16
			if binary.BigEndian.Uint32(s.hdr[:4]) == nbdStructMagic {
				n = 20
			}
			_, err = io.ReadFull(s.r, s.hdr[4:n])
		}
		if err != nil {
			s.err = err
		}
	}
	if err != nil {
		s.conn.Close()
		s.dev.signalBroken()
	}
	return err
}

// Handle consumes one reply. A reply the protocol forbids fails the part
// it names (sending it again would only repeat it) and ends the
// connection; a server shutting down ends it too, and what it refused is
// sent again on the next one.
func (s *nbdReader) Handle() (int, bool) {
	var bad *nbdSlot
	var err error
	if binary.BigEndian.Uint32(s.hdr[:4]) == nbdStructMagic {
		bad, err = s.structuredReply()
	} else {
		bad, err = s.simpleReply()
	}
	if err != nil {
		if bad != nil {
			s.dev.finish(bad, int32(unix.EIO))
		}
		s.err = err
		return 1, false
	}
	s.dev.progress.Store(true)
	return 1, false
}

// signalBroken asks the supervisor to replace the connection.
func (d *nbdDev) signalBroken() {
	select {
	case d.broken <- struct{}{}:
	default:
	}
}

var (
	errNBDProtocol = errors.New("NBD protocol violation")
	// errNBDShutdown: the server answered ESHUTDOWN, which the protocol
	// says a client must take as the end of the connection.
	errNBDShutdown = errors.New("the server is shutting down")
)

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

func (s *nbdReader) simpleReply() (*nbdSlot, error) {
	if m := binary.BigEndian.Uint32(s.hdr[:4]); m != nbdSimpleMagic {
		return nil, fmt.Errorf("%w: reply magic %#x", errNBDProtocol, m)
	}
	errno := nbdErrno(binary.BigEndian.Uint32(s.hdr[4:]))
	handle := binary.BigEndian.Uint64(s.hdr[8:])
	sl := s.slotFor(handle)
	if sl == nil {
		return nil, fmt.Errorf("%w: reply to handle %#x, which is not in flight", errNBDProtocol, handle)
	}
	if errno == int32(unix.ESHUTDOWN) {
		return nil, errNBDShutdown
	}
	if sl.cmd == nbdCmdRead && errno == 0 {
		if s.structured {
			return sl, fmt.Errorf("%w: simple reply to a read after structured replies were agreed", errNBDProtocol)
		}
		for _, b := range sl.bufs {
			if _, err := io.ReadFull(s.r, b); err != nil {
				return nil, err
			}
		}
	}
	s.dev.finish(sl, errno)
	return nil, nil
}

func (s *nbdReader) structuredReply() (*nbdSlot, error) {
	flags := binary.BigEndian.Uint16(s.hdr[4:])
	typ := binary.BigEndian.Uint16(s.hdr[6:])
	handle := binary.BigEndian.Uint64(s.hdr[8:])
	n := binary.BigEndian.Uint32(s.hdr[16:])
	sl := s.slotFor(handle)
	if sl == nil {
		return nil, fmt.Errorf("%w: reply to handle %#x, which is not in flight", errNBDProtocol, handle)
	}
	if sl.cmd == nbdCmdRead && sl.left == 0 && sl.errno == 0 {
		sl.left = sl.n + 1 // one more than due: set on the first chunk
	}
	switch typ {
	case nbdReplyTypeNone:
		if n != 0 {
			return sl, fmt.Errorf("%w: NONE chunk with %d bytes", errNBDProtocol, n)
		}
	case nbdReplyTypeOffsetData, nbdReplyTypeOffsetHole:
		if sl.cmd != nbdCmdRead || n < 8 {
			return sl, fmt.Errorf("%w: data chunk of %d bytes for command %d", errNBDProtocol, n, sl.cmd)
		}
		if _, err := io.ReadFull(s.r, s.hdr[20:28]); err != nil {
			return nil, err
		}
		off := int64(binary.BigEndian.Uint64(s.hdr[20:])) - sl.off
		var size int64
		if typ == nbdReplyTypeOffsetHole {
			if n != 12 {
				return sl, fmt.Errorf("%w: hole chunk of %d bytes", errNBDProtocol, n)
			}
			if _, err := io.ReadFull(s.r, s.hdr[28:32]); err != nil {
				return nil, err
			}
			size = int64(binary.BigEndian.Uint32(s.hdr[28:]))
		} else {
			size = int64(n) - 8
		}
		// Chunks may come in any order; their sizes must add up to the
		// read, each inside it. (Overlapping chunks that add up are not
		// caught: that would take a map of the read.)
		if off < 0 || size > int64(sl.n)-off || uint32(size) >= sl.left {
			return sl, fmt.Errorf("%w: chunk [%d,+%d) outside the %d-byte read", errNBDProtocol, off, size, sl.n)
		}
		if err := s.fill(sl.bufs, off, size, typ == nbdReplyTypeOffsetData); err != nil {
			return nil, err
		}
		sl.left -= uint32(size)
	case nbdReplyTypeError, nbdReplyTypeErrorOffset:
		if n < 6 {
			return sl, fmt.Errorf("%w: error chunk of %d bytes", errNBDProtocol, n)
		}
		if _, err := io.ReadFull(s.r, s.hdr[20:26]); err != nil {
			return nil, err
		}
		errno := nbdErrno(binary.BigEndian.Uint32(s.hdr[20:]))
		if errno == int32(unix.ESHUTDOWN) {
			return nil, errNBDShutdown
		}
		if sl.errno == 0 {
			sl.errno = errno
			if sl.errno == 0 {
				sl.errno = int32(unix.EIO)
			}
		}
		if err := s.discard(int64(n) - 6); err != nil {
			return nil, err
		}
	default:
		if typ&nbdReplyTypeErrorBit == 0 {
			return sl, fmt.Errorf("%w: unknown reply chunk type %d", errNBDProtocol, typ)
		}
		if sl.errno == 0 {
			sl.errno = int32(unix.EIO)
		}
		if err := s.discard(int64(n)); err != nil {
			return nil, err
		}
	}
	if flags&nbdReplyFlagDone == 0 {
		return nil, nil
	}
	errno := sl.errno
	if errno == 0 && sl.cmd == nbdCmdRead && sl.left != 1 {
		return sl, fmt.Errorf("%w: read of %d bytes done with %d bytes missing", errNBDProtocol, sl.n, sl.left-1)
	}
	s.dev.finish(sl, errno)
	return nil, nil
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
