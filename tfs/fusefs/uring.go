package fusefs

// FUSE over io_uring (docs/architecture.md, "FUSE transports"). Once the
// INIT reply has offered CAP_OVER_IO_URING and the daemon has registered
// ring entries for every CPU's queue, the kernel hands each request to an
// entry of the queue of the CPU its caller runs on: the request's headers
// land in the entry's header buffer, its data in the entry's payload
// buffer, and the URING_CMD that registered (or last committed) the entry
// completes. The reply goes back in the same buffers with a
// COMMIT_AND_FETCH command, which also puts the entry back to wait for
// the next request. FORGET and INTERRUPT still come through /dev/fuse, and
// so does INIT, so go-fuse's own server keeps reading it; notifications
// from the daemon go out through it too.
//
// The requests themselves are decoded and answered by go-fuse's
// ProtocolServer over the same RawFileSystem as the /dev/fuse server: the
// transport only moves bytes between the kernel's buffers and it.
//
// Threads: the kernel delivers each request to the ring through task work
// of the thread that submitted the entry's last command, and that thread
// must be free to run it. A thread blocked in a FUSE request (to this
// same mount) cannot, and the mount then hangs for good. So every command
// is submitted by one thread that does nothing else: the reaper, a
// goroutine locked to its OS thread (no other goroutine runs there). It
// waits for completions (a request arriving, an entry the kernel gave back
// at teardown, or the wake-up below). It serves the last request of each
// batch itself when that request only reads (quickOp), and starts a
// goroutine for every other one, as go-fuse does for /dev/fuse reads,
// since a request may wait for the device or the log. That goroutine
// writes the reply into the entry's buffers and queues the commit; the
// reaper submits it with its next wait, and a sleeping reaper is woken
// through an eventfd it polls on the ring. Each entry is owned by one side
// at a time: the kernel from its REGISTER or COMMIT_AND_FETCH until its
// CQE, then the request's goroutine (or the reaper serving it) until the
// commit is queued, then the reaper.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tfsmount/tfsmount/blockdev/uring"
)

// The FUSE-over-io_uring ABI (linux/fuse.h, protocol 7.42).
const (
	fuseURingCmdRegister       = 1
	fuseURingCmdCommitAndFetch = 2

	// struct fuse_uring_req_header: in_out[128], op_in[128], then struct
	// fuse_uring_ent_in_out {flags, commit_id u64; payload_sz, padding
	// u32; reserved u64}.
	uringInOutSize  = 128
	uringOpInOff    = 128
	uringOpInSize   = 128
	uringEntOff     = 256
	uringHeaderSize = 288

	inHeaderSize  = 40 // struct fuse_in_header
	outHeaderSize = 16 // struct fuse_out_header

	// struct fuse_uring_cmd_req: flags, commit_id u64; qid u16; pad[6].
	cmdReqCommitID = 8
	cmdReqQID      = 16
)

// URingParamPath is the kernel's switch for FUSE over io_uring; root can
// turn it on (echo Y >...), and it is off by default.
const URingParamPath = "/sys/module/fuse/parameters/enable_uring"

// URingEnabled reports whether the kernel accepts FUSE over io_uring.
func URingEnabled() bool {
	b, err := os.ReadFile(URingParamPath)
	return err == nil && strings.TrimSpace(string(b)) == "Y"
}

// ringEntry is one registered buffer pair. hdr and payload point into the
// transport's mapping, outside the Go heap, so the kernel may write them
// while no Go pointer to them is live.
type ringEntry struct {
	qid     uint16
	hdr     []byte
	payload []byte
	iov     [2]unix.Iovec
}

// fuseRing is the FUSE-over-io_uring transport of one mount.
type fuseRing struct {
	r       *uring.Ring // its SQ is the reaper's alone
	devFd   int
	ps      *fuse.ProtocolServer
	mem     []byte
	entries []ringEntry
	efd     int // eventfd that wakes the reaper
	logf    func(format string, args ...any)

	mu       sync.Mutex
	commits  []commit // replies ready, for the reaper to submit
	sleeping bool     // the reaper waits and nobody has woken it yet
	stopping bool     // stop was called: the reaper ends

	served atomic.Int64 // requests answered, for statistics

	stopOnce sync.Once
	live     sync.WaitGroup // request goroutines
	done     chan struct{}  // closed when the reaper has ended
}

// commit is a reply ready in entry idx, for the request commitID.
type commit struct {
	idx      int
	commitID uint64
}

// errRegister marks a failure after registering began: the mount can then
// neither use the ring nor safely fall back to /dev/fuse.
var errRegister = errors.New("registering ring entries failed")

// pollUserData marks the completions of the reaper's eventfd poll.
const pollUserData = ^uint64(0)

// startURing registers perQueue entries for each CPU's queue on the
// mounted /dev/fuse descriptor devFd, each with a payload of payloadSize
// bytes, and starts serving requests through ps. One ring and one reaper
// serve every queue: measured against a ring and a reaper per queue, that
// served more cached 4 KiB reads at queue depth 32 (1.3-1.6x /dev/fuse,
// against about 1x), the same with the device answering.
func startURing(devFd int, ps *fuse.ProtocolServer, perQueue, payloadSize int, logf func(string, ...any)) (*fuseRing, error) {
	queues, err := possibleCPUs()
	if err != nil {
		return nil, err
	}
	n := queues * perQueue
	hdrStride := 512 // header buffers apart from payloads, cache-line aligned
	payloadSize = (payloadSize + 4095) &^ 4095
	mem, err := unix.Mmap(-1, 0, n*(hdrStride+payloadSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("fuse io_uring: map %d buffers: %w", n, err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Munmap(mem)
		return nil, fmt.Errorf("fuse io_uring: eventfd: %w", err)
	}
	// A descriptor of the ring's own: go-fuse closes its /dev/fuse
	// descriptor when its loop ends, while the reaper may still commit.
	devFd, err = unix.FcntlInt(uintptr(devFd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		unix.Munmap(mem)
		unix.Close(efd)
		return nil, fmt.Errorf("fuse io_uring: dup /dev/fuse: %w", err)
	}
	r, err := uring.Setup(n+1, 2*n+2, uring.Attempt{Flags: uring.SetupSQE128 | uring.SetupClamp, Name: "SQE128|CLAMP"})
	if err == nil && int(r.Params.SQEntries) < n+1 {
		r.Close()
		err = fmt.Errorf("the ring holds %d SQEs, %d needed", r.Params.SQEntries, n+1)
	}
	if err != nil {
		unix.Munmap(mem)
		unix.Close(efd)
		unix.Close(devFd)
		return nil, fmt.Errorf("fuse io_uring: %w", err)
	}
	t := &fuseRing{r: r, devFd: devFd, ps: ps, mem: mem, efd: efd, entries: make([]ringEntry, n), logf: logf, done: make(chan struct{})}
	payloads := n * hdrStride
	for i := range t.entries {
		e := &t.entries[i]
		e.qid = uint16(i / perQueue)
		e.hdr = mem[i*hdrStride : i*hdrStride+uringHeaderSize]
		e.payload = mem[payloads+i*payloadSize : payloads+(i+1)*payloadSize]
		e.iov[0] = unix.Iovec{Base: &e.hdr[0]}
		e.iov[0].SetLen(len(e.hdr))
		e.iov[1] = unix.Iovec{Base: &e.payload[0]}
		e.iov[1].SetLen(len(e.payload))
	}
	started := make(chan error, 1)
	go t.reap(started)
	if err := <-started; err != nil {
		<-t.done
		// Entries the kernel took may still be written into while it
		// cancels them: leave their buffers mapped.
		t.mem = nil
		t.close()
		return nil, err
	}
	return t, nil
}

// possibleCPUs is the number of queues the kernel makes: one per possible
// CPU, every one of which must have an entry before any request goes over
// the ring.
func possibleCPUs() (int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/possible")
	if err != nil {
		return 0, fmt.Errorf("fuse io_uring: %w", err)
	}
	return cpuCount(string(b))
}

// cpuCount is the number of CPUs in a kernel CPU list such as
// "0-3,8,10-11": the kernel makes one queue for each possible CPU.
func cpuCount(list string) (int, error) {
	n := 0
	for _, part := range strings.Split(strings.TrimSpace(list), ",") {
		lo, hi, found := strings.Cut(part, "-")
		if !found {
			hi = lo
		}
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || a < 0 || b < a {
			return 0, fmt.Errorf("fuse io_uring: CPU list %q: bad part %q", list, part)
		}
		n += b - a + 1
	}
	return n, nil
}

// queueCmd fills an SQE for entry i. Reaper only.
func (t *fuseRing) queueCmd(i int, op uint32, commitID uint64) {
	e := &t.entries[i]
	sqe, tail := t.r.NextSQE()
	sqe.Opcode = uring.OpURingCmd
	sqe.Fd = int32(t.devFd)
	sqe.Off = uint64(op) // cmd_op
	sqe.Addr = uint64(uintptr(unsafe.Pointer(&e.iov[0])))
	sqe.Len = uint32(len(e.iov))
	sqe.UserData = uint64(i)
	cmd := t.r.Cmd(sqe)
	binary.LittleEndian.PutUint64(cmd[cmdReqCommitID:], commitID)
	binary.LittleEndian.PutUint16(cmd[cmdReqQID:], e.qid)
	t.r.Publish(tail)
}

// armPoll asks for a completion each time the eventfd is written. Reaper
// only.
func (t *fuseRing) armPoll() {
	sqe, tail := t.r.NextSQE()
	sqe.Opcode = uring.OpPollAdd
	sqe.Fd = int32(t.efd)
	sqe.OpFlags = unix.POLLIN
	sqe.Len = uring.PollAddMulti
	sqe.UserData = pollUserData
	t.r.Publish(tail)
}

// reap is the reaper: see "Threads" above. It registers the entries,
// reports on started whether the kernel took them, and then serves until
// stop, or until the kernel has given every entry back.
func (t *fuseRing) reap(started chan<- error) {
	runtime.LockOSThread() // never unlocked: see "Threads"
	defer close(t.done)
	for i := range t.entries {
		t.queueCmd(i, fuseURingCmdRegister, 0)
	}
	t.armPoll()
	// A REGISTER the kernel refuses completes at once with the reason;
	// one it takes completes only when a request arrives.
	_, err := t.r.Enter(t.r.Unsubmitted(), 0, 0)
	if err == nil && t.r.CQReady() {
		if c := t.r.CQEs[*t.r.CQHead&t.r.CQMask]; c.Res < 0 {
			err = fmt.Errorf("register entry %d: %w", c.UserData, syscall.Errno(-c.Res))
		}
	}
	if err != nil {
		// Some entries may have been taken, and the kernel may already
		// send requests over the ring: the mount cannot fall back.
		started <- fmt.Errorf("fuse io_uring: %w: %w", errRegister, err)
		return
	}
	started <- nil
	t.logf("tfsmount: FUSE requests come over io_uring (%d entries)", len(t.entries))
	out := len(t.entries)
	var efdBuf [8]byte
	enterFailed := false
	for out > 0 {
		t.mu.Lock()
		for _, c := range t.commits {
			t.queueCmd(c.idx, fuseURingCmdCommitAndFetch, c.commitID)
		}
		t.commits = t.commits[:0]
		if t.stopping {
			t.mu.Unlock()
			return
		}
		wait := !t.r.CQReady()
		t.sleeping = wait
		t.mu.Unlock()
		if n := t.r.Unsubmitted(); n > 0 || wait {
			var minComplete, flags uint32
			if wait {
				minComplete, flags = 1, uring.EnterGetEvents
			}
			_, err := t.r.Enter(n, minComplete, flags)
			if err != nil && err != unix.EINTR && err != unix.EAGAIN && err != unix.EBUSY {
				// Leaving would cancel every entry and hang the mount
				// (see "Threads"): say so once and keep trying.
				if !enterFailed {
					t.logf("tfsmount: fuse io_uring: %v; retrying", err)
					enterFailed = true
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		t.mu.Lock()
		t.sleeping = false
		t.mu.Unlock()
		// Every request but the last of this batch goes to a goroutine of
		// its own; the last is served here if it is quick, which saves a
		// hand-off and a wake-up when requests come one at a time (one
		// the device must answer then holds the next ones back for that
		// long, which is why the others are not served here too).
		last := -1
		for t.r.CQReady() {
			head := atomic.LoadUint32(t.r.CQHead)
			c := t.r.CQEs[head&t.r.CQMask]
			atomic.StoreUint32(t.r.CQHead, head+1)
			switch {
			case c.UserData == pollUserData:
				unix.Read(t.efd, efdBuf[:]) // back to zero; nothing to read is fine
				if c.Flags&uring.CQEFMore == 0 {
					t.armPoll()
				}
			case c.Res < 0:
				out--
				if c.Res != -int32(syscall.ENOTCONN) && c.Res != -int32(syscall.ECANCELED) && c.Res != -int32(syscall.ECONNABORTED) {
					t.logf("tfsmount: fuse io_uring: entry %d: %v", c.UserData, syscall.Errno(-c.Res))
				}
			default:
				if last >= 0 {
					t.live.Add(1)
					go t.serve(last)
				}
				last = int(c.UserData)
			}
		}
		if last >= 0 {
			t.live.Add(1)
			if quickOp(t.entries[last].hdr) {
				t.serve(last)
			} else {
				go t.serve(last)
			}
		}
	}
}

// quickOp reports whether the request whose header is hdr only reads:
// it waits at most for a device read, never for a log write, a write-back
// or memory, so the reaper may serve it itself. An fsync served there
// would hold every other request of the mount back for seconds.
//
// Large reads are not served there either: those are the kernel's
// read-ahead of a sequential reader, several in flight at once, and
// serving one on the reaper left the others waiting for the device in
// turn (cold 1 MiB sequential reads fell to 0.83x of /dev/fuse).
func quickOp(hdr []byte) bool {
	switch binary.LittleEndian.Uint32(hdr[4:]) { // fuse_in_header.opcode
	case 15: // READ: fuse_read_in.size, after fh and offset
		return binary.LittleEndian.Uint32(hdr[uringOpInOff+16:]) <= quickReadMax
	case 1, 3, 5, 17, 22, 23, 27, 28, 29, 34, 44, 46:
		// LOOKUP GETATTR READLINK STATFS GETXATTR LISTXATTR OPENDIR
		// READDIR RELEASEDIR ACCESS READDIRPLUS LSEEK
		return true
	}
	return false
}

// quickReadMax is the largest read the reaper serves itself.
const quickReadMax = 64 << 10

// serve answers the request in entry i and queues the commit of the reply,
// which also fetches the entry's next request. The reaper serving one
// itself is awake, so it is not woken.
func (t *fuseRing) serve(i int) {
	defer t.live.Done()
	e := &t.entries[i]
	ent := e.hdr[uringEntOff:]
	commitID := binary.LittleEndian.Uint64(ent[8:])
	payloadSz := int(binary.LittleEndian.Uint32(ent[16:]))
	unique := binary.LittleEndian.Uint64(e.hdr[8:])
	reqLen := int(binary.LittleEndian.Uint32(e.hdr[0:]))
	opIn := reqLen - inHeaderSize - payloadSz
	var n int
	status := fuse.EIO
	if opIn >= 0 && opIn <= uringOpInSize && payloadSz <= len(e.payload) {
		in := [][]byte{e.hdr[:inHeaderSize], e.hdr[uringOpInOff : uringOpInOff+opIn], e.payload[:payloadSz]}
		out := [][]byte{e.hdr[:outHeaderSize], e.payload}
		n, status = t.ps.HandleRequest(in, out)
	}
	if !status.Ok() || n < outHeaderSize {
		// No reply was made (a request go-fuse could not parse): answer
		// with an error so the caller is not left waiting.
		if status.Ok() {
			status = fuse.ENOSYS
		}
		binary.LittleEndian.PutUint32(e.hdr[0:], outHeaderSize)
		binary.LittleEndian.PutUint32(e.hdr[4:], uint32(-int32(status)))
		binary.LittleEndian.PutUint64(e.hdr[8:], unique)
		n = outHeaderSize
	}
	binary.LittleEndian.PutUint32(ent[16:], uint32(n-outHeaderSize))
	t.served.Add(1)
	t.mu.Lock()
	t.commits = append(t.commits, commit{i, commitID})
	wake := t.sleeping
	t.sleeping = false
	t.mu.Unlock()
	if wake {
		t.wake()
	}
}

func (t *fuseRing) wake() {
	one := [8]byte{1}
	if _, err := unix.Write(t.efd, one[:]); err != nil && err != unix.EAGAIN {
		t.logf("tfsmount: fuse io_uring: wake: %v", err)
	}
}

// stop releases the ring once the connection is gone (after go-fuse's
// /dev/fuse loop returned). The kernel then gives every entry back, and
// the reaper ends when it has them all; only then is it safe to unmap the
// buffers, which the kernel writes into until then. If that takes longer
// than stopTimeout, the reaper is told to end and the buffers are left
// mapped. Calls after the first do nothing.
func (t *fuseRing) stop() {
	t.stopOnce.Do(func() {
		select {
		case <-t.done:
		case <-time.After(stopTimeout):
			t.logf("tfsmount: fuse io_uring: entries not given back after %v; leaving their buffers mapped", stopTimeout)
			t.mu.Lock()
			t.stopping = true
			t.mu.Unlock()
			t.wake()
			<-t.done
			t.mem = nil
		}
		t.live.Wait()
		t.close()
	})
}

// stopTimeout bounds how long stop waits for the kernel to give the
// entries back.
const stopTimeout = 5 * time.Second

func (t *fuseRing) close() {
	err := errors.Join(t.r.Close(), unix.Close(t.efd), unix.Close(t.devFd))
	if t.mem != nil {
		err = errors.Join(err, unix.Munmap(t.mem))
	}
	if err != nil {
		t.logf("tfsmount: fuse io_uring: close: %v", err)
	}
}
