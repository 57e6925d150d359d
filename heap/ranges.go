package heap

import (
	"fmt"
	"sort"
)

// Ranges is the range allocator for disk blocks: a map of the free extents
// of a volume, kept as a sorted slice of disjoint runs. A bitmap would cost
// one bit per block (256 MiB per TiB); the run list costs one entry per free
// extent, and TFS volumes are mostly contiguous free space.
//
// Invariants (checked by Check, and by the tests after every operation):
//   - runs are sorted by start, each has n > 0;
//   - runs neither overlap nor touch (adjacent free runs are merged);
//   - every run lies inside [0, size);
//   - free equals the sum of the run lengths.
//
// Ranges is not safe for concurrent use; its owner (the filesystem) holds
// its metadata mutex around every call.
type Ranges struct {
	size uint64
	runs []run
	free uint64
}

type run struct{ start, n uint64 }

func (r run) end() uint64 { return r.start + r.n }

// NewRanges returns an allocator of size blocks, all free.
func NewRanges(size uint64) *Ranges {
	r := &Ranges{size: size}
	if size > 0 {
		r.runs = []run{{0, size}}
		r.free = size
	}
	return r
}

// Size is the number of blocks managed.
func (r *Ranges) Size() uint64 { return r.size }

// FreeBlocks is the number of free blocks.
func (r *Ranges) FreeBlocks() uint64 { return r.free }

// Runs calls f for every free run in ascending order until f returns false.
func (r *Ranges) Runs(f func(start, n uint64) bool) {
	for _, x := range r.runs {
		if !f(x.start, x.n) {
			return
		}
	}
}

// find returns the index of the first run whose end is greater than b.
func (r *Ranges) find(b uint64) int {
	return sort.Search(len(r.runs), func(i int) bool { return r.runs[i].end() > b })
}

// FreeWithin calls f for every free part of [start, start+n), in order.
func (r *Ranges) FreeWithin(start, n uint64, f func(start, n uint64)) {
	end := start + n
	if end < start {
		end = r.size
	}
	for i := r.find(start); i < len(r.runs) && r.runs[i].start < end; i++ {
		lo, hi := max(r.runs[i].start, start), min(r.runs[i].end(), end)
		if lo < hi {
			f(lo, hi-lo)
		}
	}
}

// IsFree reports whether every block of [start, start+n) is free.
func (r *Ranges) IsFree(start, n uint64) bool {
	if n == 0 || start+n < start || start+n > r.size {
		return false
	}
	i := r.find(start)
	return i < len(r.runs) && r.runs[i].start <= start && r.runs[i].end() >= start+n
}

// Reserve marks [start, start+n) as used. It fails, changing nothing, if
// any block of the range is outside the volume or already used. Replay
// uses it to claim log extensions and file extents found on disk.
func (r *Ranges) Reserve(start, n uint64) error {
	if n == 0 {
		return fmt.Errorf("reserve blocks [%d,+0): empty range", start)
	}
	if start+n < start || start+n > r.size {
		return fmt.Errorf("reserve blocks [%d,%d): outside the volume of %d blocks", start, start+n, r.size)
	}
	i := r.find(start)
	if i == len(r.runs) || r.runs[i].start > start || r.runs[i].end() < start+n {
		return fmt.Errorf("reserve blocks [%d,%d): overlaps blocks already in use", start, start+n)
	}
	r.take(i, start, n)
	return nil
}

// take removes [start, start+n) from run i, which contains it.
func (r *Ranges) take(i int, start, n uint64) {
	x := r.runs[i]
	r.free -= n
	switch {
	case x.start == start && x.n == n:
		r.runs = append(r.runs[:i], r.runs[i+1:]...)
	case x.start == start:
		r.runs[i] = run{start + n, x.n - n}
	case x.end() == start+n:
		r.runs[i].n = x.n - n
	default:
		r.runs[i].n = start - x.start
		r.runs = append(r.runs, run{})
		copy(r.runs[i+2:], r.runs[i+1:])
		r.runs[i+1] = run{start + n, x.end() - start - n}
	}
}

// Alloc takes the lowest free run of at least n blocks (first fit) and
// returns its first block; ok is false if no run is long enough.
func (r *Ranges) Alloc(n uint64) (start uint64, ok bool) {
	if n == 0 {
		return 0, false
	}
	for i, x := range r.runs {
		if x.n >= n {
			r.take(i, x.start, n)
			return x.start, true
		}
	}
	return 0, false
}

// AllocAt takes [start, start+n) if all of it is free (used to grow an
// extent in place) and reports whether it did.
func (r *Ranges) AllocAt(start, n uint64) bool {
	if !r.IsFree(start, n) {
		return false
	}
	r.take(r.find(start), start, n)
	return true
}

// Free returns [start, start+n) to the free map. Freeing a block that is
// already free, or outside the volume, is an error and changes nothing.
func (r *Ranges) Free(start, n uint64) error {
	if n == 0 {
		return nil
	}
	if start+n < start || start+n > r.size {
		return fmt.Errorf("free blocks [%d,%d): outside the volume of %d blocks", start, start+n, r.size)
	}
	// i is the first run that ends at or after start: it may touch the
	// freed range on its left, and run i (or i+1) may touch it on the right.
	i := sort.Search(len(r.runs), func(i int) bool { return r.runs[i].end() >= start })
	if i < len(r.runs) && r.runs[i].start < start+n && r.runs[i].end() > start {
		return fmt.Errorf("free blocks [%d,%d): already free", start, start+n)
	}
	left := i < len(r.runs) && r.runs[i].end() == start
	j := i
	if left {
		j = i + 1
	}
	right := j < len(r.runs) && r.runs[j].start == start+n
	if j < len(r.runs) && !right && r.runs[j].start < start+n {
		return fmt.Errorf("free blocks [%d,%d): already free", start, start+n)
	}
	r.free += n
	switch {
	case left && right:
		r.runs[i].n += n + r.runs[j].n
		r.runs = append(r.runs[:j], r.runs[j+1:]...)
	case left:
		r.runs[i].n += n
	case right:
		r.runs[j] = run{start, n + r.runs[j].n}
	default:
		r.runs = append(r.runs, run{})
		copy(r.runs[i+1:], r.runs[i:])
		r.runs[i] = run{start, n}
	}
	return nil
}

// Clone returns an independent copy.
func (r *Ranges) Clone() *Ranges {
	return &Ranges{size: r.size, runs: append([]run(nil), r.runs...), free: r.free}
}

// Check verifies the invariants listed on Ranges.
func (r *Ranges) Check() error {
	var sum uint64
	for i, x := range r.runs {
		if x.n == 0 {
			return fmt.Errorf("run %d at %d is empty", i, x.start)
		}
		if x.end() > r.size || x.end() < x.start {
			return fmt.Errorf("run %d [%d,%d) outside the volume of %d blocks", i, x.start, x.end(), r.size)
		}
		if i > 0 && r.runs[i-1].end() >= x.start {
			return fmt.Errorf("runs %d and %d overlap or touch at %d", i-1, i, x.start)
		}
		sum += x.n
	}
	if sum != r.free {
		return fmt.Errorf("free count %d, runs hold %d", r.free, sum)
	}
	return nil
}
