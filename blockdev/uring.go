package blockdev

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev/uring"
	"github.com/tfsmount/tfsmount/heap"
	"github.com/tfsmount/tfsmount/irq"
)

// uringDev is the io_uring backend.
//
// A request is cut into parts, one SQE each: at most iovMax buffers per
// READV/WRITEV, or one contiguous run inside a registered page-heap slab
// for READ_FIXED/WRITE_FIXED. Each part takes a preallocated slot whose
// index is the SQE's user_data; Submit blocks while every slot is busy
// (back-pressure), so a request larger than the ring goes in as slots free.
//
// The reaper (an irq.Line) handles each CQE in interrupt context: on the
// fast path (the part moved everything it asked for) it accounts the part
// in the request with atomics, frees the slot and, for the last part, posts
// the request itself to the bhqueue. Errors end the part right there too.
// Short transfers, EINTR and EAGAIN put the slot on the retry channel and
// post a retrier: a bh worker resubmits it, or a submitter waiting for a
// slot does it first (take), so a bh worker blocked in Submit can never be
// what a retry waits for.
//
// Invariants: a slot is owned by exactly one of the free list, a submitter
// filling it, the kernel, or the retry channel and whoever resubmits it;
// slots never exceed SQ entries, and the CQ has twice as many entries, so
// neither ring overflows.
type uringDev struct {
	*imageFile
	q     *bh.Queue
	r     *uring.Ring
	slots []slot
	free  chan uint32 // indices of free slots
	retry chan *slot  // parts to resubmit (short transfers, EINTR, EAGAIN); room for every slot
	sqMu  sync.Mutex  // guards filling SQEs and advancing the SQ tail
	line  *irq.Line
	fixed *fixedBuffers // nil when no pool is registered
	files [2]int        // fd and dfd registered as fixed files 0 and 1; -1 when not registered
	stats Stats
	why   string
	sqes  atomic.Uint64 // SQEs published, for tests of request splitting
	// enters counts io_uring_enter calls that submit, for tests of
	// batching.
	enters atomic.Uint64

	life   sync.RWMutex // Submit holds it shared; Close exclusively
	closed bool
}

// setupRingFn creates rings; tests replace it to make io_uring unavailable.
var setupRingFn = setupRing

// setupRing creates a device ring of at least entries SQEs and twice as
// many CQEs. Not COOP_TASKRUN: it stops the kernel from waking the
// submitting thread to run completion task work, and our submitters are
// any goroutine on any OS thread, which may be asleep in the Go scheduler;
// completions then wait for that thread to wake for some other reason
// (measured: 4 KiB QD32 reads fell from 48k to 29k IOPS with it).
func setupRing(entries int) (*uring.Ring, error) {
	return uring.Setup(entries, 2*entries,
		uring.Attempt{Flags: uring.SetupClamp | uring.SetupSubmitAll, Name: "CQSIZE|CLAMP|SUBMIT_ALL"},
		uring.Attempt{Flags: uring.SetupClamp, Name: "CQSIZE|CLAMP"})
}

// wakeUserData marks the NOP that tells the reaper to stop.
const wakeUserData = ^uint64(0)

// Failure codes kept in Request.fail besides errnos.
const (
	failEOF    = -1 // a read or write moved nothing inside the device
	failClosed = -2 // submitted after Close
	failLost   = -3 // a flush that cannot cover writes the device lost (ErrWritesLost)
)

// slot is the preallocated state of one SQE in flight. It is the bh.Item
// posted on the slow path, so posting it allocates nothing.
type slot struct {
	dev   *uringDev
	idx   uint32
	armed atomic.Uint32 // 1 while the kernel owns the slot; orders the fields below between submitter and reaper
	req   *Request
	op    Op
	fd    int
	off   int64 // device offset of what is still to move
	want  int64 // bytes still to move
	got   int64 // bytes moved by earlier rounds of this part (short transfers)
	iov   []unix.Iovec
	bufs  [][]byte // the part's buffers, kept reachable until completion
	fixed int      // registered buffer index, or -1
	fua   bool     // a write with RWF_DSYNC (Request.FUA)
	res   int32    // result of the last CQE
}

func newUringDev(f *imageFile, q *bh.Queue, pool *heap.PagePool, depth int) (*uringDev, error) {
	r, err := setupRingFn(depth)
	if err != nil {
		return nil, err
	}
	n := int(r.Params.SQEntries)
	u := &uringDev{imageFile: f, q: q, r: r, slots: make([]slot, n), free: make(chan uint32, n), retry: make(chan *slot, n)}
	iovs := make([]unix.Iovec, n*iovMax)
	for i := range u.slots {
		s := &u.slots[i]
		s.dev, s.idx, s.fixed = u, uint32(i), -1
		s.iov = iovs[i*iovMax : (i+1)*iovMax : (i+1)*iovMax]
		u.free <- uint32(i)
	}
	u.why = fmt.Sprintf("io_uring, %d slots, %s", n, r.SetupHow)
	u.files = [2]int{-1, -1}
	// Registered files spare the kernel a file lookup per request.
	fds := []int32{int32(f.fd), int32(f.dfd)}
	if f.dfd < 0 {
		fds = fds[:1]
	}
	if err := r.Register(uring.RegisterFiles, unsafe.Pointer(&fds[0]), uintptr(len(fds))); err == nil {
		u.files[0] = f.fd
		if f.dfd >= 0 {
			u.files[1] = f.dfd
		}
		u.why += ", files registered"
	}
	if pool != nil {
		fb, err := registerPool(r, pool)
		if err != nil {
			u.why += fmt.Sprintf(", page heap not registered (%v)", err)
		} else {
			u.fixed = fb
			u.why += ", page heap registered for fixed-buffer I/O"
		}
	}
	u.line = irq.Start("io_uring "+f.path, (*reaper)(u))
	return u, nil
}

// Submit cuts r into parts and queues them, blocking while no slot is free.
func (u *uringDev) Submit(r *Request) {
	u.life.RLock()
	defer u.life.RUnlock()
	u.submitLocked(r, true)
}

// submitAll queues every request and hands them all to the kernel with one
// io_uring_enter at the end (more only if it has to wait for a slot), so
// the kernel's block layer sees them as one batch.
func (u *uringDev) submitAll(rs []*Request) {
	u.life.RLock()
	defer u.life.RUnlock()
	for _, r := range rs {
		u.submitLocked(r, false)
	}
	u.enterPending()
}

// submitLocked is Submit with u.life held shared; enter says whether to
// hand r's last part to the kernel now (else the caller does).
func (u *uringDev) submitLocked(r *Request, enter bool) {
	r.start, r.stats, r.owner = nowNs(), &u.stats, u.imageFile
	r.parts, r.moved, r.fail = 1, 0, 0
	if u.closed {
		finishNow(u.q, r, 0, fmt.Errorf("%s %s: device closed", r.Op, u.path))
		return
	}
	if err := Check(r, u.size, u.readOnly); err != nil {
		finishNow(u.q, r, 0, err)
		return
	}
	switch r.Op {
	case OpRead, OpWrite:
		u.submitTransfer(r, enter)
	case OpFlush:
		if u.readOnly {
			break
		}
		s := u.take(r)
		s.op, s.fd = OpFlush, u.fd
		u.queue(s, enter)
	case OpDiscard:
		off, n, ok := u.discardRange(r.Off, r.Length)
		if !ok {
			break
		}
		s := u.take(r)
		s.op, s.fd, s.off, s.want = OpDiscard, u.fd, off, n
		u.queue(s, enter)
	}
	u.dropPart(r)
}

// submitTransfer queues r's parts. SQEs are published as they are filled
// and handed to the kernel in one io_uring_enter per batch: when the last
// part is queued (if enter), or before blocking for a slot (the parts
// already queued must reach the kernel, or no slot would ever come back).
func (u *uringDev) submitTransfer(r *Request, enter bool) {
	bufs, off := r.Bufs, r.Off
	for len(bufs) > 0 {
		if len(bufs[0]) == 0 {
			bufs = bufs[1:]
			continue
		}
		s := u.take(r)
		s.op, s.off, s.fua = r.Op, off, r.FUA && r.Op == OpWrite
		n := u.fixed.run(bufs)
		if n > 0 && useFixed(bufs, n) {
			s.fixed = u.fixed.index(bufs[0])
		} else {
			n = min(len(bufs), iovMax)
		}
		s.bufs = bufs[:n]
		s.want = lenOf(s.bufs)
		s.fd = u.fdFor(off, s.bufs)
		bufs, off = bufs[n:], off+s.want
		u.queue(s, enter && len(bufs) == 0)
	}
}

// minFixedRun is the shortest contiguous run of registered buffers sent
// as its own READ_FIXED/WRITE_FIXED when more buffers follow it. Shorter
// runs go out in one READV/WRITEV with their neighbours: a request over
// scattered pages would otherwise cost one SQE (and one CQE, and one slot)
// per page, which is far dearer than the kernel pinning the pages of one
// vectored op.
const minFixedRun = 128 << 10

// useFixed reports whether the first n buffers of bufs, a contiguous run
// in a registered slab, should go out as one fixed-buffer op: when they are
// all that is left of the request, or long enough to be worth an op alone.
func useFixed(bufs [][]byte, n int) bool {
	return n == len(bufs) || lenOf(bufs[:n]) >= minFixedRun
}

// take gives r a free slot, waiting for one if there is none. Before it
// waits, it hands the kernel every SQE published so far: a batch (submitAll)
// queues without entering, and the slots it holds come back only once the
// kernel has them. While it waits it does the resubmissions that are due
// itself: they may be what would free a slot, and otherwise they wait for
// the retrier to get its turn on a bh worker. No bh work in the tree calls
// Submit today, but if some did, every worker could be waiting here for
// slots that only a worker would resubmit, which would never end.
// REQUIRES: no u.sqMu (entering and resubmitting take it).
func (u *uringDev) take(r *Request) *slot {
	select {
	case idx := <-u.free:
		return u.claim(idx, r)
	default:
	}
	u.enterPending()
	for {
		select {
		case idx := <-u.free:
			return u.claim(idx, r)
		case s := <-u.retry:
			s.resubmit()
		}
	}
}

func (u *uringDev) claim(idx uint32, r *Request) *slot {
	s := &u.slots[idx]
	s.req, s.got, s.fixed, s.bufs, s.want, s.off, s.fua = r, 0, -1, nil, 0, 0, false
	atomic.AddInt32(&r.parts, 1)
	return s
}

// queue publishes s's SQE; submit also enters the kernel.
func (u *uringDev) queue(s *slot, submit bool) {
	u.sqMu.Lock()
	defer u.sqMu.Unlock()
	u.fillSQE(s)
	if submit {
		u.enterLocked()
	}
}

func (u *uringDev) enterPending() {
	u.sqMu.Lock()
	u.enterLocked()
	u.sqMu.Unlock()
}

// fillSQE writes s's SQE at the SQ tail and publishes it. REQUIRES: u.sqMu.
func (u *uringDev) fillSQE(s *slot) {
	e, tail := u.r.NextSQE()
	e.Fd, e.UserData = int32(s.fd), uint64(s.idx)
	for i, fd := range u.files {
		if fd >= 0 && fd == s.fd {
			e.Fd, e.Flags = int32(i), uring.SQEFixedFile
		}
	}
	switch s.op {
	case OpRead, OpWrite:
		e.Off = uint64(s.off)
		if s.fixed >= 0 {
			e.Opcode = uring.OpReadFixed
			if s.op == OpWrite {
				e.Opcode = uring.OpWriteFixed
			}
			e.Addr = uint64(uintptr(unsafe.Pointer(&s.bufs[0][0])))
			e.Len = uint32(s.want)
			e.BufIndex = uint16(s.fixed)
		} else {
			e.Opcode = uring.OpReadv
			if s.op == OpWrite {
				e.Opcode = uring.OpWritev
			}
			iov := s.iov[:0]
			for _, b := range s.bufs {
				if len(b) == 0 {
					continue
				}
				v := unix.Iovec{Base: &b[0]}
				v.SetLen(len(b))
				iov = append(iov, v)
			}
			e.Addr = uint64(uintptr(unsafe.Pointer(&iov[0])))
			e.Len = uint32(len(iov))
		}
		if s.fua {
			// On a block device opened O_DIRECT the kernel sends this as a
			// FUA write; on a file, as the write followed by fdatasync.
			e.OpFlags = unix.RWF_DSYNC
		}
	case OpFlush:
		// DRAIN starts the fsync only after every SQE submitted before it
		// has completed, so it covers the writes already in flight.
		e.Opcode, e.OpFlags = uring.OpFsync, uring.FsyncDatasync
		e.Flags |= uring.SQEIODrain
	case OpDiscard:
		e.Opcode = uring.OpFallocate
		e.Off, e.Addr = uint64(s.off), uint64(s.want)
		e.Len = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
	case opWake:
		e.Opcode, e.UserData = uring.OpNop, wakeUserData
	}
	if s.op != opWake {
		s.armed.Store(1)
	}
	u.sqes.Add(1)
	u.r.Publish(tail)
}

// opWake is the internal op of the stop NOP.
const opWake Op = 255

// enterLocked hands every published SQE to the kernel. The kernel may take
// fewer than offered (EAGAIN/EBUSY when it is short of resources); the rest
// stay in the ring and are offered again. REQUIRES: u.sqMu.
func (u *uringDev) enterLocked() {
	for backoff := time.Microsecond; ; {
		n := u.r.Unsubmitted()
		if n == 0 {
			return
		}
		_, err := u.r.Enter(n, 0, 0)
		u.enters.Add(1)
		switch err {
		case nil, unix.EINTR:
		case unix.EAGAIN, unix.EBUSY:
			u.stats.retries.Add(1)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Millisecond)
		default:
			// The ring itself is broken (EBADF, EFAULT...): nothing we
			// queued can complete, so do not pretend it will.
			panic(fmt.Sprintf("blockdev: io_uring_enter on %s: %v", u.path, err))
		}
	}
}

// reaper is the device seen as an interrupt source.
type reaper uringDev

// Wait blocks until at least one CQE is ready.
func (rp *reaper) Wait() error {
	u := (*uringDev)(rp)
	for {
		if u.r.CQReady() {
			return nil
		}
		_, err := u.r.Enter(0, 1, uring.EnterGetEvents)
		if err == nil || err == unix.EINTR || err == unix.EAGAIN || err == unix.EBUSY {
			continue
		}
		return fmt.Errorf("io_uring_enter(GETEVENTS) on %s: %w", u.path, err)
	}
}

// Handle drains the CQ in interrupt context.
func (rp *reaper) Handle() (int, bool) {
	u := (*uringDev)(rp)
	head, tail := atomic.LoadUint32(u.r.CQHead), atomic.LoadUint32(u.r.CQTail)
	n, stop := 0, false
	for ; head != tail; head++ {
		c := &u.r.CQEs[head&u.r.CQMask]
		if !u.onCQE(c.UserData, c.Res) {
			stop = true
		}
		n++
	}
	atomic.StoreUint32(u.r.CQHead, head)
	return n, stop
}

// onCQE is the interrupt handler for one completion: no allocation, no lock
// but the bhqueue's (and the free list's channel), no callback. It reports
// false for the stop NOP.
func (u *uringDev) onCQE(userData uint64, res int32) bool {
	if userData == wakeUserData {
		return false
	}
	s := &u.slots[userData]
	if s.armed.Swap(0) != 1 {
		return true // not ours; cannot happen unless the kernel lies
	}
	s.res = res
	switch {
	case s.op == OpFlush && res >= 0,
		s.op == OpDiscard && (res >= 0 || res == -int32(unix.EOPNOTSUPP)),
		int64(res) == s.want:
		r := s.req
		moved := s.got
		if s.op == OpRead || s.op == OpWrite {
			moved += int64(res)
		}
		u.release(s)
		atomic.AddInt64(&r.moved, moved)
		u.dropPart(r)
	case res < 0 && res != -int32(unix.EINTR) && res != -int32(unix.EAGAIN):
		u.failPart(s)
	default:
		// A retry (short transfer, EINTR, EAGAIN) needs the SQ lock: it
		// is done by a bh worker, or by a submitter waiting in take,
		// whichever gets to it first. The channel has room for every
		// slot, so the send never blocks.
		u.retry <- s
		u.q.Post((*retrier)(u))
	}
	return true
}

// retrier is the device seen as the bh.Item that does the resubmissions
// due. It is posted once per retry; a run that finds them done already
// (by another run, or by take) does nothing.
type retrier uringDev

func (rt *retrier) RunBH() {
	u := (*uringDev)(rt)
	for {
		select {
		case s := <-u.retry:
			s.resubmit()
		default:
			return
		}
	}
}

// resubmit is the slow path of a completion, on a bh worker or a waiting
// submitter: resubmit short transfers and EINTR/EAGAIN; a transfer that
// moved nothing fails. It never waits for a slot: the part keeps its own.
func (s *slot) resubmit() {
	u, res := s.dev, s.res
	switch {
	case res == -int32(unix.EINTR) || res == -int32(unix.EAGAIN):
		u.stats.retries.Add(1)
		u.queue(s, true)
		return
	case res > 0 && (s.op == OpRead || s.op == OpWrite) && int64(res) < s.want:
		// Short transfer: move on past what was done and go again.
		u.stats.retries.Add(1)
		s.got += int64(res)
		s.off += int64(res)
		s.want -= int64(res)
		if s.fixed < 0 {
			s.bufs = advance(s.bufs, int(res))
		} else {
			s.bufs = [][]byte{s.bufs[0][res:]}
		}
		s.fd = u.fdFor(s.off, s.bufs)
		u.queue(s, true)
		return
	}
	u.failPart(s)
}

// failPart ends s's part with a failure: errno from res, or failEOF when
// it moved nothing inside the device (the image shrank under us). It takes
// no lock and allocates nothing, so the reaper uses it too: errors do not
// depend on a bh worker to give their slot back.
func (u *uringDev) failPart(s *slot) {
	r, got, code := s.req, s.got, int32(failEOF)
	if s.res < 0 {
		code = -s.res
	}
	atomic.CompareAndSwapInt32(&r.fail, 0, code)
	u.release(s)
	atomic.AddInt64(&r.moved, got)
	u.dropPart(r)
}

// release returns s to the free list. The channel has room for every slot,
// so this never blocks.
func (u *uringDev) release(s *slot) {
	s.req, s.bufs = nil, nil
	u.free <- s.idx
}

// dropPart ends one part of r (or the submitter's own reference); the last
// one counts the request and posts its completion.
func (u *uringDev) dropPart(r *Request) {
	if atomic.AddInt32(&r.parts, -1) != 0 {
		return
	}
	n := atomic.LoadInt64(&r.moved)
	r.stats.record(r.Op, n, atomic.LoadInt32(&r.fail) != 0, r.start)
	u.q.Post((*requestDone)(r))
}

// requestDone is a Request seen as the bh.Item that delivers its Done.
type requestDone Request

func (rd *requestDone) RunBH() {
	r := (*Request)(rd)
	n := atomic.LoadInt64(&r.moved)
	var err error
	switch code := atomic.LoadInt32(&r.fail); {
	case code == failEOF:
		err = r.owner.opError(r.Op, r.Off, io.ErrUnexpectedEOF)
	case code == failLost:
		err = r.owner.opError(r.Op, r.Off, ErrWritesLost)
	case code > 0:
		err = r.owner.opError(r.Op, r.Off, unix.Errno(code))
	}
	r.Done(n, err)
}

func (u *uringDev) Size() int64          { return u.size }
func (u *uringDev) SectorSize() int      { return u.sector }
func (u *uringDev) ReadOnly() bool       { return u.readOnly }
func (u *uringDev) Stats() StatsSnapshot { return u.stats.Snapshot() }

func (u *uringDev) describe() string {
	return u.why + ", " + u.kind() + " " + u.path + ", " + u.directWhy
}

// Close waits for every request in flight, stops the reaper and releases
// the ring and the image.
func (u *uringDev) Close() error {
	u.life.Lock()
	if u.closed {
		u.life.Unlock()
		return nil
	}
	u.closed = true
	u.life.Unlock()
	// Owning every slot means nothing is in flight.
	for range u.slots {
		<-u.free
	}
	u.sqMu.Lock()
	u.fillSQE(&slot{op: opWake})
	u.enterLocked()
	u.sqMu.Unlock()
	err := u.line.Err()
	runtime.KeepAlive(u.slots)
	if u.fixed != nil {
		u.fixed.close()
	}
	if u.files[0] >= 0 {
		// The ring's references to registered files would otherwise be
		// dropped by the kernel's asynchronous ring teardown, releasing
		// the image lock some time after Close returns; unregistering is
		// synchronous, so a reopen right after Close finds it unlocked.
		if uerr := u.r.Register(uring.UnregisterFiles, nil, 0); uerr != nil {
			err = errors.Join(err, fmt.Errorf("close %s: unregister files: %w", u.path, uerr))
		}
	}
	return errors.Join(err, u.r.Close(), u.close())
}
