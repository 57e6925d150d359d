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

// WriteMany submits every write at once (SubmitAll) and waits for all of
// them; the writes may complete in any order.
func WriteMany(d Device, ws []Write) error {
	if len(ws) == 0 {
		return nil
	}
	errs := make([]error, len(ws))
	reqs := make([]*Request, len(ws))
	var wg sync.WaitGroup
	wg.Add(len(ws))
	for i, w := range ws {
		reqs[i] = &Request{Op: OpWrite, Off: w.Off, Bufs: [][]byte{w.Data}, Done: func(n int64, err error) {
			switch {
			case err != nil:
				errs[i] = fmt.Errorf("write %d bytes at %d: %w", len(w.Data), w.Off, err)
			case n != int64(len(w.Data)):
				errs[i] = fmt.Errorf("write %d bytes at %d: wrote %d: %w", len(w.Data), w.Off, n, io.ErrShortWrite)
			}
			wg.Done()
		}}
	}
	SubmitAll(d, reqs)
	wg.Wait()
	return errors.Join(errs...)
}
