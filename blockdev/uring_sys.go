package blockdev

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The io_uring ABI, defined here from linux/io_uring.h because x/sys/unix
// has only the syscall numbers. Sizes are checked in uring_sys_test.go.

// uringParams is struct io_uring_params (120 bytes).
type uringParams struct {
	sqEntries    uint32
	cqEntries    uint32
	flags        uint32
	sqThreadCPU  uint32
	sqThreadIdle uint32
	features     uint32
	wqFd         uint32
	resv         [3]uint32
	sqOff        sqRingOffsets
	cqOff        cqRingOffsets
}

// sqRingOffsets is struct io_sqring_offsets (40 bytes).
type sqRingOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

// cqRingOffsets is struct io_cqring_offsets (40 bytes).
type cqRingOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

// sqe is struct io_uring_sqe (64 bytes).
type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	opFlags     uint32 // rw_flags, fsync_flags, ...
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  uint32
	addr3       uint64
	pad         uint64
}

// cqe is struct io_uring_cqe (16 bytes).
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// rsrcRegister is struct io_uring_rsrc_register (32 bytes).
type rsrcRegister struct {
	nr    uint32
	flags uint32
	resv2 uint64
	data  uint64
	tags  uint64
}

// rsrcUpdate2 is struct io_uring_rsrc_update2 (32 bytes).
type rsrcUpdate2 struct {
	offset uint32
	resv   uint32
	data   uint64
	tags   uint64
	nr     uint32
	resv2  uint32
}

const (
	opNop        = 0
	opReadv      = 1
	opWritev     = 2
	opFsync      = 3
	opReadFixed  = 4
	opWriteFixed = 5
	opFallocate  = 17

	sqeFixedFile = 1 << 0
	sqeIODrain   = 1 << 1

	fsyncDatasync = 1

	setupCQSize    = 1 << 3
	setupClamp     = 1 << 4
	setupSubmitAll = 1 << 7

	featSingleMmap = 1 << 0

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	enterGetEvents = 1 << 0

	registerFiles         = 2
	unregisterFiles       = 3
	registerBuffers2      = 15
	registerBuffersUpdate = 16
	rsrcRegisterSparse    = 1 << 0
)

// ring is a mapped io_uring: the shared SQ/CQ ring and the SQE array. The
// pointers point into the mappings, which are outside the Go heap and live
// until unmap.
type ring struct {
	fd       int
	params   uringParams
	ringMem  []byte // SQ and CQ rings (one mapping with SINGLE_MMAP)
	cqMem    []byte // separate CQ mapping on old kernels, else nil
	sqeMem   []byte
	sqHead   *uint32
	sqTail   *uint32
	sqMask   uint32
	sqes     []sqe
	cqHead   *uint32
	cqTail   *uint32
	cqMask   uint32
	cqes     []cqe
	setupHow string // the flags that were accepted, for Describe
}

// setupRing creates a ring of at least entries SQEs and twice as many CQEs,
// trying the newest useful flags first and dropping those the kernel
// rejects with EINVAL.
func setupRing(entries int) (*ring, error) {
	attempts := []struct {
		flags uint32
		name  string
	}{
		// Not COOP_TASKRUN: it stops the kernel from waking the submitting
		// thread to run completion task work, and our submitters are any
		// goroutine on any OS thread, which may be asleep in the Go
		// scheduler; completions then wait for that thread to wake for
		// some other reason (measured: 4 KiB QD32 reads fell from 48k to
		// 29k IOPS with it).
		{setupCQSize | setupClamp | setupSubmitAll, "CQSIZE|CLAMP|SUBMIT_ALL"},
		{setupCQSize | setupClamp, "CQSIZE|CLAMP"},
	}
	var lastErr error
	for _, a := range attempts {
		p := uringParams{flags: a.flags, cqEntries: uint32(2 * entries)}
		fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
		if e == unix.EINVAL {
			lastErr = fmt.Errorf("io_uring_setup(%s): %w", a.name, e)
			continue
		}
		if e != 0 {
			return nil, fmt.Errorf("io_uring_setup: %w", e)
		}
		r := &ring{fd: int(fd), params: p, setupHow: a.name}
		if err := r.mmap(); err != nil {
			r.close()
			return nil, err
		}
		return r, nil
	}
	return nil, lastErr
}

func (r *ring) mmap() error {
	p := &r.params
	sqLen := int(p.sqOff.array + p.sqEntries*4)
	cqLen := int(p.cqOff.cqes + p.cqEntries*uint32(unsafe.Sizeof(cqe{})))
	prot, flags := unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE
	var err error
	if p.features&featSingleMmap != 0 {
		r.ringMem, err = unix.Mmap(r.fd, offSQRing, max(sqLen, cqLen), prot, flags)
		if err != nil {
			return fmt.Errorf("mmap io_uring rings: %w", err)
		}
	} else {
		if r.ringMem, err = unix.Mmap(r.fd, offSQRing, sqLen, prot, flags); err != nil {
			return fmt.Errorf("mmap io_uring SQ ring: %w", err)
		}
		if r.cqMem, err = unix.Mmap(r.fd, offCQRing, cqLen, prot, flags); err != nil {
			return fmt.Errorf("mmap io_uring CQ ring: %w", err)
		}
	}
	cqMem := r.ringMem
	if r.cqMem != nil {
		cqMem = r.cqMem
	}
	if r.sqeMem, err = unix.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), prot, flags); err != nil {
		return fmt.Errorf("mmap io_uring SQEs: %w", err)
	}
	u32 := func(mem []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }
	r.sqHead, r.sqTail = u32(r.ringMem, p.sqOff.head), u32(r.ringMem, p.sqOff.tail)
	r.sqMask = *u32(r.ringMem, p.sqOff.ringMask)
	r.cqHead, r.cqTail = u32(cqMem, p.cqOff.head), u32(cqMem, p.cqOff.tail)
	r.cqMask = *u32(cqMem, p.cqOff.ringMask)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	r.cqes = unsafe.Slice((*cqe)(unsafe.Pointer(&cqMem[p.cqOff.cqes])), p.cqEntries)
	// The SQ indirection array maps ring position i to SQE i once and for
	// all, so submitting is only filling an SQE and advancing the tail.
	array := unsafe.Slice(u32(r.ringMem, p.sqOff.array), p.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	return nil
}

// enter calls io_uring_enter. Syscall6 (not RawSyscall6) tells the Go
// scheduler the thread may block.
func (r *ring) enter(toSubmit, minComplete, flags uint32) (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), uintptr(minComplete), uintptr(flags), 0, 0)
	if e != 0 {
		return int(n), e
	}
	return int(n), nil
}

func (r *ring) register(opcode uintptr, arg unsafe.Pointer, nrArgs uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), opcode, uintptr(arg), nrArgs, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// unsubmitted is the number of SQEs published but not yet consumed.
func (r *ring) unsubmitted() uint32 {
	return atomic.LoadUint32(r.sqTail) - atomic.LoadUint32(r.sqHead)
}

func (r *ring) close() error {
	var errs []error
	for _, m := range [][]byte{r.sqeMem, r.cqMem, r.ringMem} {
		if m != nil {
			errs = append(errs, unix.Munmap(m))
		}
	}
	r.sqeMem, r.cqMem, r.ringMem = nil, nil, nil
	if r.fd >= 0 {
		errs = append(errs, unix.Close(r.fd))
		r.fd = -1
	}
	return errors.Join(errs...)
}
