package blockdev

import "fmt"

// Slice is a window [off, off+size) of another device, such as a
// partition. Requests are checked against the window and shifted; the
// completion is the inner device's, so it already arrives through the
// bhqueue.
type Slice struct {
	inner     Device
	off, size int64
}

// NewSlice returns the window of d starting at off, size bytes long. It
// panics if the window does not lie inside d (a caller bug: partition
// tables are validated before slicing).
func NewSlice(d Device, off, size int64) *Slice {
	if off < 0 || size < 0 || off+size > d.Size() {
		panic(fmt.Sprintf("blockdev: slice [%d, %d) outside a %d-byte device", off, off+size, d.Size()))
	}
	return &Slice{inner: d, off: off, size: size}
}

// Submit shifts r into the inner device. r itself is not modified.
func (s *Slice) Submit(r *Request) { s.inner.Submit(s.shift(r)) }

func (s *Slice) submitAll(rs []*Request) {
	inner := make([]*Request, len(rs))
	for i, r := range rs {
		inner[i] = s.shift(r)
	}
	SubmitAll(s.inner, inner)
}

// shift returns the inner device's request for r.
func (s *Slice) shift(r *Request) *Request {
	done := r.Done
	if err := Check(r, s.size, s.inner.ReadOnly()); err != nil {
		// The Slice has no queue of its own: send the inner device a
		// request it must refuse (negative offset), and deliver our error
		// through its completion, so the error is asynchronous too.
		return &Request{Op: OpRead, Off: -1, Bufs: [][]byte{nil}, Done: func(int64, error) { done(0, err) }}
	}
	inner := &Request{Op: r.Op, Off: r.Off + s.off, Bufs: r.Bufs, Length: r.Length, FUA: r.FUA, Done: done}
	if r.Op == OpFlush {
		inner.Off = 0
	}
	return inner
}

func (s *Slice) Size() int64     { return s.size }
func (s *Slice) SectorSize() int { return s.inner.SectorSize() }
func (s *Slice) ReadOnly() bool  { return s.inner.ReadOnly() }

// Close does not close the inner device: a disk outlives its partitions.
func (s *Slice) Close() error { return nil }

func (s *Slice) describe() string {
	return fmt.Sprintf("slice [%d, %d) of %s", s.off, s.off+s.size, Describe(s.inner))
}

// Stats returns the inner device's counters, if it keeps any.
func (s *Slice) Stats() StatsSnapshot {
	st, _ := DeviceStats(s.inner)
	return st
}
