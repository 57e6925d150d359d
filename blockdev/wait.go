package blockdev

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// The synchronous helpers below are for the syscall context (FUSE threads,
// offline tools): they submit one request and wait for its completion.
// They must never be called from a bh worker, which would wait on itself.

func wait(d Device, r *Request) (int64, error) {
	type result struct {
		n   int64
		err error
	}
	ch := make(chan result, 1)
	r.Done = func(n int64, err error) { ch <- result{n, err} }
	d.Submit(r)
	res := <-ch
	return res.n, res.err
}

// ReadAt reads len(p) bytes at off.
func ReadAt(d Device, p []byte, off int64) error {
	n, err := wait(d, &Request{Op: OpRead, Off: off, Bufs: [][]byte{p}})
	if err != nil {
		return fmt.Errorf("read %d bytes at %d: %w", len(p), off, err)
	}
	if n != int64(len(p)) {
		return fmt.Errorf("read %d bytes at %d: got %d: %w", len(p), off, n, io.ErrUnexpectedEOF)
	}
	return nil
}

// WriteAt writes p at off.
func WriteAt(d Device, p []byte, off int64) error {
	return writeAt(d, p, off, false)
}

// WriteAtFUA writes p at off as a FUA write: durable when it returns.
func WriteAtFUA(d Device, p []byte, off int64) error {
	return writeAt(d, p, off, true)
}

func writeAt(d Device, p []byte, off int64, fua bool) error {
	n, err := wait(d, &Request{Op: OpWrite, Off: off, Bufs: [][]byte{p}, FUA: fua})
	if err != nil {
		return fmt.Errorf("write %d bytes at %d: %w", len(p), off, err)
	}
	if n != int64(len(p)) {
		return fmt.Errorf("write %d bytes at %d: wrote %d: %w", len(p), off, n, io.ErrShortWrite)
	}
	return nil
}

// Flush makes every completed write durable.
func Flush(d Device) error {
	if _, err := wait(d, &Request{Op: OpFlush}); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return nil
}

// Discard tells the device that [off, off+n) no longer holds data.
func Discard(d Device, off, n int64) error {
	if _, err := wait(d, &Request{Op: OpDiscard, Off: off, Length: n}); err != nil {
		return fmt.Errorf("discard %d bytes at %d: %w", n, off, err)
	}
	return nil
}

// Write is one write of WriteMany.
type Write struct {
	Off  int64
	Data []byte
}

// WriteMany submits every write at once and waits for all of them; the
// writes may complete in any order.
func WriteMany(d Device, ws []Write) error {
	rs := make([]*Request, len(ws))
	for i, w := range ws {
		rs[i] = &Request{Op: OpWrite, Off: w.Off, Bufs: [][]byte{w.Data}}
	}
	return submitAndWait(d, rs)
}

// DiscardMany discards every range [Off, Off+Length) of rs at once and
// waits for all of them.
func DiscardMany(d Device, ranges [][2]int64) error {
	rs := make([]*Request, len(ranges))
	for i, r := range ranges {
		rs[i] = &Request{Op: OpDiscard, Off: r[0], Length: r[1]}
	}
	return submitAndWait(d, rs)
}

// submitAndWait hands rs to the device together (SubmitAll) and waits for
// every completion; a write that moved less than asked is an error.
func submitAndWait(d Device, rs []*Request) error {
	if len(rs) == 0 {
		return nil
	}
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	wg.Add(len(rs))
	for i, r := range rs {
		r.Done = func(n int64, err error) {
			switch {
			case err != nil:
				errs[i] = fmt.Errorf("%s of %d bytes at %d: %w", r.Op, max(r.Len(), r.Length), r.Off, err)
			case r.Op == OpWrite && n != r.Len():
				errs[i] = fmt.Errorf("write %d bytes at %d: wrote %d: %w", r.Len(), r.Off, n, io.ErrShortWrite)
			}
			wg.Done()
		}
	}
	SubmitAll(d, rs)
	wg.Wait()
	return errors.Join(errs...)
}
