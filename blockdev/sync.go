package blockdev

import (
	"fmt"
	"io"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/tfsmount/tfsmount/bh"
)

// iovMax is the kernel's limit on iovecs per preadv/pwritev or per
// READV/WRITEV SQE (IOV_MAX).
const iovMax = 1024

// syncDev is the fallback backend: a bounded pool of goroutines doing
// preadv/pwritev/fdatasync. Each blocks an OS thread while in the kernel, so
// the pool size bounds the threads we add. Completions are posted to the
// bhqueue like io_uring's, never run inline.
type syncDev struct {
	*imageFile
	q       *bh.Queue
	reqs    chan *Request // Submit blocks when the pool is saturated
	workers sync.WaitGroup
	stats   Stats
	why     string
	life    sync.RWMutex // Submit holds it shared; Close exclusively
	closed  bool
}

func newSyncDev(f *imageFile, q *bh.Queue, workers int, why string) *syncDev {
	d := &syncDev{imageFile: f, q: q, reqs: make(chan *Request, workers), why: why}
	d.workers.Add(workers)
	for i := 0; i < workers; i++ {
		go d.work()
	}
	return d
}

func (d *syncDev) Submit(r *Request) {
	r.start, r.stats = nowNs(), &d.stats
	d.life.RLock()
	defer d.life.RUnlock()
	if d.closed {
		finishNow(d.q, r, 0, fmt.Errorf("%s %s: device closed", r.Op, d.path))
		return
	}
	if err := Check(r, d.size, d.readOnly); err != nil {
		finishNow(d.q, r, 0, err)
		return
	}
	d.reqs <- r
}

func (d *syncDev) work() {
	defer d.workers.Done()
	for r := range d.reqs {
		n, err := d.serve(r)
		finishNow(d.q, r, n, err)
	}
}

func (d *syncDev) serve(r *Request) (int64, error) {
	switch r.Op {
	case OpRead, OpWrite:
		return d.transfer(r)
	case OpFlush:
		if d.readOnly {
			return 0, nil
		}
		if err := retryEINTR(func() error { return unix.Fdatasync(d.fd) }); err != nil {
			return 0, d.opError(r.Op, 0, err)
		}
		return 0, nil
	case OpDiscard:
		return 0, d.discard(r.Off, r.Length)
	}
	return 0, nil
}

// transfer runs the short-transfer loop: the kernel may move fewer bytes
// than asked (signals, device limits), so continue from where it stopped,
// at most iovMax buffers per call. A read that returns zero bytes inside the
// device means the file shrank under us: report it rather than spin.
func (d *syncDev) transfer(r *Request) (int64, error) {
	fd := d.fdFor(r.Off, r.Bufs)
	bufs := r.Bufs
	var done int64
	total := r.Len()
	for done < total {
		chunk := bufs
		if len(chunk) > iovMax {
			chunk = chunk[:iovMax]
		}
		var n int
		var err error
		if r.Op == OpRead {
			n, err = unix.Preadv(fd, chunk, r.Off+done)
		} else if r.FUA {
			n, err = unix.Pwritev2(fd, chunk, r.Off+done, unix.RWF_DSYNC)
		} else {
			n, err = unix.Pwritev(fd, chunk, r.Off+done)
		}
		if err == unix.EINTR || err == unix.EAGAIN {
			d.stats.retries.Add(1)
			continue
		}
		if err != nil {
			return done, d.opError(r.Op, r.Off+done, err)
		}
		if n == 0 {
			return done, d.opError(r.Op, r.Off+done, io.ErrUnexpectedEOF)
		}
		if int64(n) < lenOf(chunk) {
			d.stats.retries.Add(1)
		}
		done += int64(n)
		bufs = advance(bufs, n)
	}
	return done, nil
}

// discard releases [off, off+n): a hole punch on files, BLKDISCARD on block
// devices. Discard is advisory, so "not supported" is success.
func (d *syncDev) discard(off, n int64) error {
	off, n, ok := d.discardRange(off, n)
	if !ok {
		return nil
	}
	var err error
	if d.blockDev {
		rng := [2]uint64{uint64(off), uint64(n)}
		err = retryEINTR(func() error { return ioctlPtr(d.fd, unix.BLKDISCARD, &rng) })
	} else {
		err = retryEINTR(func() error {
			return unix.Fallocate(d.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		})
	}
	if err == unix.EOPNOTSUPP || err == unix.ENOTTY {
		return nil
	}
	if err != nil {
		return d.opError(OpDiscard, off, err)
	}
	return nil
}

func (d *syncDev) Size() int64     { return d.size }
func (d *syncDev) SectorSize() int { return d.sector }
func (d *syncDev) ReadOnly() bool  { return d.readOnly }

// Stats returns the device's counters.
func (d *syncDev) Stats() StatsSnapshot { return d.stats.Snapshot() }

func (d *syncDev) describe() string {
	return "sync (" + d.why + "), " + d.kind() + " " + d.path + ", " + d.directWhy
}

// Close waits for the requests already submitted, then closes the image.
// Requests submitted after Close fail.
func (d *syncDev) Close() error {
	d.life.Lock()
	if d.closed {
		d.life.Unlock()
		return nil
	}
	d.closed = true
	d.life.Unlock()
	close(d.reqs)
	d.workers.Wait()
	return d.close()
}

// finishNow posts r's completion with its outcome and counts it.
func finishNow(q *bh.Queue, r *Request, n int64, err error) {
	r.stats.record(r.Op, n, err != nil, r.start)
	complete(q, r, n, err)
}

func retryEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}

func lenOf(bufs [][]byte) int64 {
	var n int64
	for _, b := range bufs {
		n += int64(len(b))
	}
	return n
}

// advance drops the first n bytes from bufs. It returns a new outer slice
// when it has to cut into a buffer, so the caller's slice is never changed.
func advance(bufs [][]byte, n int) [][]byte {
	for n > 0 && len(bufs) > 0 {
		if n < len(bufs[0]) {
			rest := make([][]byte, len(bufs))
			copy(rest, bufs)
			rest[0] = rest[0][n:]
			return rest
		}
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	for len(bufs) > 0 && len(bufs[0]) == 0 {
		bufs = bufs[1:]
	}
	return bufs
}
