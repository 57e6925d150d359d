// Package blockdev owns the block layer: a Device takes asynchronous read,
// write, flush and discard requests and delivers every completion through
// the bhqueue, never inline. Backends: io_uring (default), a pool of
// pread/pwrite threads (fallback), memory (tests), fault injection (tests)
// and a slice of another device (a partition).
//
// Files: device.go (the contract), open.go and file.go (opening images:
// locking, geometry, O_DIRECT choice), uring.go (the io_uring
// backend; the ring and its ABI are in package blockdev/uring), fixed.go (page-heap slabs as registered
// buffers), sync.go (the thread-pool backend), memory.go, faulty.go and
// crash.go (fault injection and crash images), slice.go, stats.go, wait.go
// (synchronous helpers for requester contexts).
package blockdev

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/tfsmount/tfsmount/bh"
)

// Op is what a Request asks the device to do.
type Op uint8

const (
	OpRead    Op = iota // read into Bufs at Off
	OpWrite             // write Bufs at Off
	OpFlush             // make completed writes durable (data sync)
	OpDiscard           // the range [Off, Off+Length) no longer holds data
)

func (o Op) String() string {
	switch o {
	case OpRead:
		return "read"
	case OpWrite:
		return "write"
	case OpFlush:
		return "flush"
	case OpDiscard:
		return "discard"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Request is one asynchronous device operation.
//
// Ownership: from Submit until Done runs, the request and its buffers belong
// to the device; the caller must not touch them. Done is called exactly once,
// on a bh worker, with the number of bytes transferred (reads and writes) and
// nil, or with an error. A read or write that transfers fewer bytes than asked
// is retried by the device; a short count in Done means the device ended.
type Request struct {
	Op     Op
	Off    int64    // byte offset from the start of the device
	Bufs   [][]byte // scatter-gather buffers for reads and writes
	Length int64    // byte length, for discard only
	// FUA (force unit access), for writes only: the write is durable when
	// it completes, without a flush, and without making any other write
	// durable. A commit record that must land after what it commits is
	// written this way once a flush has covered the rest.
	FUA  bool
	Done func(n int64, err error)

	// Completion bookkeeping for backends that split a request into parts
	// completed in interrupt context (io_uring): the reaper updates these
	// with atomics only, and the part that brings parts to zero posts the
	// request itself (as a preallocated bh.Item) to the queue.
	// Plain fields used through sync/atomic functions, so that Request
	// stays copyable before submission.
	parts int32     // parts still in flight, plus one while submitting
	moved int64     // bytes transferred by finished parts
	fail  int32     // first failure: errno > 0, or one of the fail* codes
	start int64     // submission time (monotonic ns) for latency stats
	stats *Stats    // where the outcome is counted, nil for none
	owner opErrorer // names the device in errors built at completion
}

// opErrorer builds the error of a failed request, naming its device.
type opErrorer interface {
	opError(op Op, off int64, err error) error
}

// Len is the number of bytes a read or write request covers.
func (r *Request) Len() int64 {
	var n int64
	for _, b := range r.Bufs {
		n += int64(len(b))
	}
	return n
}

// ErrWritesLost is the error of a flush that cannot make durable what it
// should: writes the device had completed are gone without a trace (an NBD
// server that lost its write cache while the connection was down). It is an
// EIO, and more: whatever was written since the last good flush may be
// missing, so a filesystem must not go on as if it were there.
var ErrWritesLost = fmt.Errorf("the device lost completed writes before they were flushed: %w", syscall.EIO)

// Device is an asynchronous block device.
type Device interface {
	// Submit queues r. It may block the caller for back-pressure when the
	// device is saturated, so bh workers and the reaper must not call it
	// while holding locks a completion needs. A bh worker may submit: the
	// backends free their capacity without the bhqueue (the io_uring
	// reaper recycles slots itself; sync workers post and move on), except
	// that io_uring resubmits short transfers and EAGAIN from a bh worker.
	Submit(r *Request)
	// Size is the device size in bytes.
	Size() int64
	// SectorSize is the logical sector size in bytes.
	SectorSize() int
	// ReadOnly reports whether writes are refused.
	ReadOnly() bool
	// Close waits for outstanding requests and releases the device.
	Close() error
}

// SubmitAll submits every request of rs, as Submit one by one would. A
// device that can hand several requests to the kernel at once does so
// (io_uring: one io_uring_enter for the lot, which the kernel's block
// layer plugs into one batch and one notification of the disk), so
// callers that have many requests ready, such as a write-back, should
// prefer it to a loop.
func SubmitAll(d Device, rs []*Request) {
	if b, ok := d.(batchSubmitter); ok {
		b.submitAll(rs)
		return
	}
	for _, r := range rs {
		d.Submit(r)
	}
}

// batchSubmitter is a Device with a cheaper SubmitAll.
type batchSubmitter interface {
	submitAll(rs []*Request)
}

// ErrReadOnly is returned for writes to a read-only device.
var ErrReadOnly = errors.New("device is read-only")

// ErrOutOfRange is returned for requests beyond the end of the device.
var ErrOutOfRange = errors.New("request beyond end of device")

// Check validates r against a device of the given size and read-only
// state. Backends call it before doing anything.
func Check(r *Request, size int64, readOnly bool) error {
	switch r.Op {
	case OpRead, OpWrite:
		if r.Op == OpWrite && readOnly {
			return ErrReadOnly
		}
		if r.Off < 0 || r.Off+r.Len() > size {
			return fmt.Errorf("%s of %d bytes at %d on a %d-byte device: %w", r.Op, r.Len(), r.Off, size, ErrOutOfRange)
		}
	case OpDiscard:
		if readOnly {
			return ErrReadOnly
		}
		if r.Off < 0 || r.Length < 0 || r.Off+r.Length > size {
			return fmt.Errorf("discard of %d bytes at %d on a %d-byte device: %w", r.Length, r.Off, size, ErrOutOfRange)
		}
	case OpFlush:
		if readOnly {
			return nil
		}
	default:
		return fmt.Errorf("unknown operation %d", r.Op)
	}
	return nil
}

// complete posts r's completion to q. Every backend ends requests here, so
// Done never runs inline in the submitter's context.
func complete(q *bh.Queue, r *Request, n int64, err error) {
	done := r.Done
	q.PostFunc(func() { done(n, err) })
}
