// Package uring is the io_uring system interface, the one copy of it in
// the project: the kernel ABI (defined here from linux/io_uring.h, since
// x/sys/unix has only the syscall numbers), ring setup and mapping, and
// io_uring_enter/io_uring_register. It knows nothing of what the rings
// carry: blockdev's device reads and writes image files through one, and
// fusefs takes FUSE requests from the kernel through others.
//
// A Ring is not safe for concurrent use by itself: each user says which
// lock guards its submission queue and which goroutine consumes its
// completion queue. ABI sizes are checked in ring_test.go.
package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Params is struct io_uring_params (120 bytes).
type Params struct {
	SQEntries    uint32
	CQEntries    uint32
	Flags        uint32
	SQThreadCPU  uint32
	SQThreadIdle uint32
	Features     uint32
	WQFd         uint32
	Resv         [3]uint32
	SQOff        SQRingOffsets
	CQOff        CQRingOffsets
}

// SQRingOffsets is struct io_sqring_offsets (40 bytes).
type SQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

// CQRingOffsets is struct io_cqring_offsets (40 bytes).
type CQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

// SQE is struct io_uring_sqe (64 bytes). On a ring set up with SQE128 each
// entry is followed by 64 more bytes, which Cmd exposes.
type SQE struct {
	Opcode      uint8
	Flags       uint8
	IOPrio      uint16
	Fd          int32
	Off         uint64 // also cmd_op (low 32 bits) for URING_CMD
	Addr        uint64
	Len         uint32
	OpFlags     uint32 // rw_flags, fsync_flags, uring_cmd_flags...
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	SpliceFdIn  uint32
	Addr3       uint64 // the command area of URING_CMD starts here
	Pad         uint64
}

// CQE is struct io_uring_cqe (16 bytes).
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// RsrcRegister is struct io_uring_rsrc_register (32 bytes).
type RsrcRegister struct {
	Nr    uint32
	Flags uint32
	Resv2 uint64
	Data  uint64
	Tags  uint64
}

// RsrcUpdate2 is struct io_uring_rsrc_update2 (32 bytes).
type RsrcUpdate2 struct {
	Offset uint32
	Resv   uint32
	Data   uint64
	Tags   uint64
	Nr     uint32
	Resv2  uint32
}

// Opcodes, SQE flags, setup, enter and register codes used in the project.
const (
	OpNop        = 0
	OpReadv      = 1
	OpWritev     = 2
	OpFsync      = 3
	OpReadFixed  = 4
	OpWriteFixed = 5
	OpPollAdd    = 6
	OpFallocate  = 17
	OpURingCmd   = 46

	PollAddMulti = 1 << 0 // in SQE.Len of a POLL_ADD
	CQEFMore     = 1 << 1 // in CQE.Flags: more completions will follow

	SQEFixedFile = 1 << 0
	SQEIODrain   = 1 << 1

	FsyncDatasync = 1

	SetupCQSize    = 1 << 3
	SetupClamp     = 1 << 4
	SetupSubmitAll = 1 << 7
	SetupSQE128    = 1 << 10

	featSingleMmap = 1 << 0

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	EnterGetEvents = 1 << 0

	RegisterFiles         = 2
	UnregisterFiles       = 3
	RegisterBuffers2      = 15
	RegisterBuffersUpdate = 16
	RsrcRegisterSparse    = 1 << 0
)

// Ring is a mapped io_uring: the shared SQ/CQ rings and the SQE array. The
// pointers point into the mappings, which are outside the Go heap and live
// until Close.
type Ring struct {
	Fd       int
	Params   Params
	ringMem  []byte // SQ and CQ rings (one mapping with SINGLE_MMAP)
	cqMem    []byte // separate CQ mapping on old kernels, else nil
	sqeMem   []byte
	sqeSize  uintptr // 64, or 128 with SQE128
	SQHead   *uint32
	SQTail   *uint32
	SQMask   uint32
	CQHead   *uint32
	CQTail   *uint32
	CQMask   uint32
	CQEs     []CQE
	SetupHow string // the flags that were accepted, for descriptions
}

// Attempt is one set of setup flags to try, with its name for messages.
type Attempt struct {
	Flags uint32
	Name  string
}

// Setup creates a ring of at least entries SQEs and cqEntries CQEs, trying
// each attempt's flags in turn and moving on from those the kernel rejects
// with EINVAL.
func Setup(entries, cqEntries int, attempts ...Attempt) (*Ring, error) {
	var lastErr error
	for _, a := range attempts {
		p := Params{Flags: a.Flags | SetupCQSize, CQEntries: uint32(cqEntries)}
		fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
		if e == unix.EINVAL {
			lastErr = fmt.Errorf("io_uring_setup(%s): %w", a.Name, e)
			continue
		}
		if e != 0 {
			return nil, fmt.Errorf("io_uring_setup: %w", e)
		}
		r := &Ring{Fd: int(fd), Params: p, SetupHow: a.Name, sqeSize: unsafe.Sizeof(SQE{})}
		if p.Flags&SetupSQE128 != 0 {
			r.sqeSize *= 2
		}
		if err := r.mmap(); err != nil {
			r.Close()
			return nil, err
		}
		return r, nil
	}
	return nil, lastErr
}

func (r *Ring) mmap() error {
	p := &r.Params
	sqLen := int(p.SQOff.Array + p.SQEntries*4)
	cqLen := int(p.CQOff.CQEs + p.CQEntries*uint32(unsafe.Sizeof(CQE{})))
	prot, flags := unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE
	var err error
	if p.Features&featSingleMmap != 0 {
		r.ringMem, err = unix.Mmap(r.Fd, offSQRing, max(sqLen, cqLen), prot, flags)
		if err != nil {
			return fmt.Errorf("mmap io_uring rings: %w", err)
		}
	} else {
		if r.ringMem, err = unix.Mmap(r.Fd, offSQRing, sqLen, prot, flags); err != nil {
			return fmt.Errorf("mmap io_uring SQ ring: %w", err)
		}
		if r.cqMem, err = unix.Mmap(r.Fd, offCQRing, cqLen, prot, flags); err != nil {
			return fmt.Errorf("mmap io_uring CQ ring: %w", err)
		}
	}
	cqMem := r.ringMem
	if r.cqMem != nil {
		cqMem = r.cqMem
	}
	if r.sqeMem, err = unix.Mmap(r.Fd, offSQEs, int(p.SQEntries)*int(r.sqeSize), prot, flags); err != nil {
		return fmt.Errorf("mmap io_uring SQEs: %w", err)
	}
	u32 := func(mem []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }
	r.SQHead, r.SQTail = u32(r.ringMem, p.SQOff.Head), u32(r.ringMem, p.SQOff.Tail)
	r.SQMask = *u32(r.ringMem, p.SQOff.RingMask)
	r.CQHead, r.CQTail = u32(cqMem, p.CQOff.Head), u32(cqMem, p.CQOff.Tail)
	r.CQMask = *u32(cqMem, p.CQOff.RingMask)
	r.CQEs = unsafe.Slice((*CQE)(unsafe.Pointer(&cqMem[p.CQOff.CQEs])), p.CQEntries)
	// The SQ indirection array maps ring position i to SQE i once and for
	// all, so submitting is only filling an SQE and advancing the tail.
	array := unsafe.Slice(u32(r.ringMem, p.SQOff.Array), p.SQEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	return nil
}

// NextSQE returns the SQE at the SQ tail, cleared (stale op flags from an
// earlier use are a classic bug), and the tail to publish it with. The
// caller holds its submission lock until Publish.
func (r *Ring) NextSQE() (*SQE, uint32) {
	tail := atomic.LoadUint32(r.SQTail)
	e := (*SQE)(unsafe.Pointer(&r.sqeMem[uintptr(tail&r.SQMask)*r.sqeSize]))
	clear(unsafe.Slice((*byte)(unsafe.Pointer(e)), r.sqeSize))
	return e, tail
}

// Cmd is the command area of e, an SQE of this ring set up with SQE128:
// the 80 bytes from Addr3 on.
func (r *Ring) Cmd(e *SQE) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&e.Addr3)), r.sqeSize-unsafe.Offsetof(e.Addr3))
}

// Publish makes the SQEs up to tail visible to the kernel.
func (r *Ring) Publish(tail uint32) { atomic.StoreUint32(r.SQTail, tail+1) }

// Enter calls io_uring_enter. Syscall6 (not RawSyscall6) tells the Go
// scheduler the thread may block.
func (r *Ring) Enter(toSubmit, minComplete, flags uint32) (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.Fd), uintptr(toSubmit), uintptr(minComplete), uintptr(flags), 0, 0)
	if e != 0 {
		return int(n), e
	}
	return int(n), nil
}

// Register calls io_uring_register.
func (r *Ring) Register(opcode uintptr, arg unsafe.Pointer, nrArgs uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.Fd), opcode, uintptr(arg), nrArgs, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// Unsubmitted is the number of SQEs published but not yet consumed.
func (r *Ring) Unsubmitted() uint32 {
	return atomic.LoadUint32(r.SQTail) - atomic.LoadUint32(r.SQHead)
}

// CQReady reports whether a CQE is waiting.
func (r *Ring) CQReady() bool { return atomic.LoadUint32(r.CQHead) != atomic.LoadUint32(r.CQTail) }

// Close unmaps the ring and closes its descriptor.
func (r *Ring) Close() error {
	var errs []error
	for _, m := range [][]byte{r.sqeMem, r.cqMem, r.ringMem} {
		if m != nil {
			errs = append(errs, unix.Munmap(m))
		}
	}
	r.sqeMem, r.cqMem, r.ringMem = nil, nil, nil
	if r.Fd >= 0 {
		errs = append(errs, unix.Close(r.Fd))
		r.Fd = -1
	}
	return errors.Join(errs...)
}
