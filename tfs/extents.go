package tfs

import (
	"cmp"
	"slices"
	"sort"
	"strconv"
	"syscall"

	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// File extent maps (docs/format.md, "Regular files and extents") and a small
// set of file blocks.

const (
	maxExtentBlocks   = 65536 // MAX_EXTENT_SIZE: 32 MiB
	minExtentAllocBlk = 2048  // MIN_EXTENT_ALLOC_SIZE: 1 MiB
)

// blockSet is a set of file blocks kept as sorted disjoint half-open runs.
// It tracks delayed-allocation reservations per file.
//
// Invariant: runs sorted, non-empty, neither overlapping nor touching.
type blockSet struct {
	runs [][2]uint64 // [start, end)
}

// uncovered counts the blocks of [a, b) not in the set.
func (s *blockSet) uncovered(a, b uint64) uint64 {
	n := b - a
	for _, r := range s.runs {
		lo, hi := max(r[0], a), min(r[1], b)
		if lo < hi {
			n -= hi - lo
		}
	}
	return n
}

// add inserts [a, b).
func (s *blockSet) add(a, b uint64) {
	if a >= b {
		return
	}
	var out [][2]uint64
	i := 0
	for ; i < len(s.runs) && s.runs[i][1] < a; i++ {
		out = append(out, s.runs[i])
	}
	for ; i < len(s.runs) && s.runs[i][0] <= b; i++ {
		a, b = min(a, s.runs[i][0]), max(b, s.runs[i][1])
	}
	out = append(out, [2]uint64{a, b})
	s.runs = append(out, s.runs[i:]...)
}

// remove deletes [a, b) and returns how many blocks were in the set.
func (s *blockSet) remove(a, b uint64) uint64 {
	if a >= b {
		return 0
	}
	var out [][2]uint64
	var n uint64
	for _, r := range s.runs {
		lo, hi := max(r[0], a), min(r[1], b)
		if lo >= hi {
			out = append(out, r)
			continue
		}
		n += hi - lo
		if r[0] < lo {
			out = append(out, [2]uint64{r[0], lo})
		}
		if hi < r[1] {
			out = append(out, [2]uint64{hi, r[1]})
		}
	}
	s.runs = out
	return n
}

func (s *blockSet) total() uint64 {
	var n uint64
	for _, r := range s.runs {
		n += r[1] - r[0]
	}
	return n
}

// find returns the index of the first extent ending after block b.
func (n *Node) find(b uint64) int {
	return sort.Search(len(n.exts), func(i int) bool { return n.exts[i].end() > b })
}

// extentAt returns the extent covering file block b, or nil.
func (n *Node) extentAt(b uint64) *extent {
	i := n.find(b)
	if i < len(n.exts) && n.exts[i].fblock <= b {
		return n.exts[i]
	}
	return nil
}

// insertExtent adds e keeping the order.
func (n *Node) insertExtent(e *extent) {
	i := sort.Search(len(n.exts), func(i int) bool { return n.exts[i].fblock > e.fblock })
	n.exts = append(n.exts, nil)
	copy(n.exts[i+1:], n.exts[i:])
	n.exts[i] = e
}

func (n *Node) removeExtent(e *extent) {
	for i, x := range n.exts {
		if x == e {
			n.exts = append(n.exts[:i], n.exts[i+1:]...)
			return
		}
	}
}

func extentKey(fblock uint64) string { return strconv.FormatUint(fblock, 10) }

// extentsTuple returns the file's extents tuple, logging an empty one if
// the file has none yet.
func (fs *FS) extentsTuple(n *Node) (*format.Tuple, error) {
	if et, ok := n.t.Attrs["extents"].(*format.Tuple); ok {
		return et, nil
	}
	et := format.NewTuple()
	if err := fs.logEAV(n.t, "extents", et, false); err != nil {
		return nil, err
	}
	return et, nil
}

// logNewExtent records e in the file's extents tuple.
// A file without directory entries (unlinked, still open) is not on disk
// any more: its extents change in memory only.
func (fs *FS) logNewExtent(n *Node, e *extent) error {
	if n.links == 0 {
		e.pending = false
		return nil
	}
	et, err := fs.extentsTuple(n)
	if err != nil {
		return err
	}
	xt := format.NewTuple()
	xt.Attrs["offset"] = format.IntOf(e.dblock)
	xt.Attrs["length"] = format.IntOf(e.length)
	xt.Attrs["allocated"] = format.IntOf(e.allocated)
	if e.uninited {
		xt.Attrs["uninited"] = format.NullMarker
	}
	if err := fs.logEAV(et, extentKey(e.fblock), xt, false); err != nil {
		return err
	}
	e.t = xt
	e.pending = false
	return nil
}

// logExtentSize records a changed length/allocated of a logged extent.
func (fs *FS) logExtentSize(n *Node, e *extent) error {
	if e.t == nil || n.links == 0 {
		return nil
	}
	if a, _ := format.NumberOf(e.t.Attrs["allocated"]); a != e.allocated {
		if err := fs.logEAV(e.t, "allocated", format.IntOf(e.allocated), false); err != nil {
			return err
		}
	}
	if l, _ := format.NumberOf(e.t.Attrs["length"]); l != e.length {
		if err := fs.logEAV(e.t, "length", format.IntOf(e.length), false); err != nil {
			return err
		}
	}
	return nil
}

// logRemoveExtent removes a logged extent's key from the extents tuple.
func (fs *FS) logRemoveExtent(n *Node, e *extent) error {
	if e.t == nil || n.links == 0 {
		return nil
	}
	et, ok := n.t.Attrs["extents"].(*format.Tuple)
	if !ok {
		return nil
	}
	return fs.logEAV(et, extentKey(e.fblock), nil, false)
}

// freeAfterCommit gives volume blocks back once the records staged so far
// are durable (writeLog, compactLocked): a block handed to another file
// before the record that freed it reached the disk would, after a crash,
// show the new owner's data in the old one (ordering rule 3).
func (fs *FS) freeAfterCommit(start, n uint64) {
	if n == 0 {
		return
	}
	if !orderRules.freeAfterCommit {
		fs.giveBack([][2]uint64{{start, n}})
		return
	}
	fs.freeing = append(fs.freeing, [2]uint64{start, n})
	fs.freeingBlocks += n
}

// releaseFreed hands ranges taken from fs.freeing, whose freeing is now
// durable and whose discards are done (fs.discard), to the allocator.
// Called with fs.mu held.
func (fs *FS) releaseFreed(list [][2]uint64) {
	for _, r := range list {
		fs.freeingBlocks -= r[1]
	}
	fs.toAllocator(list)
}

// giveBack returns block ranges that belong to nobody on the disk to the
// allocator, telling the device first, in one batch, that they hold
// nothing: the discards complete before any new owner can be given the
// blocks, so none can zero a new owner's data. Called with fs.mu held.
func (fs *FS) giveBack(list [][2]uint64) {
	fs.discard(list)
	fs.toAllocator(list)
}

// discard tells the device that the blocks of list hold nothing, and
// waits for it. The blocks must belong to nobody and not be in the
// allocator yet.
func (fs *FS) discard(list [][2]uint64) {
	_ = blockdev.DiscardMany(fs.dev, discardRanges(list)) // advisory
}

// toAllocator hands discarded ranges to the allocator. Called with fs.mu
// held.
func (fs *FS) toAllocator(list [][2]uint64) {
	for _, r := range list {
		// The model reserved every extent at mount, so a failure here
		// means the in-memory state is inconsistent; keep going, fsck
		// will tell.
		_ = fs.free.Free(r[0], r[1])
	}
}

// maxDiscards bounds the discards sent for one commit; beyond it, ranges
// are freed without one (discard is an optimisation only).
const maxDiscards = 1 << 12

// discardRanges turns freed block ranges into device byte ranges, with
// neighbours joined: the files of a tree sit side by side, so rm -rf frees
// runs of ranges that touch, and each discard of an image file is a hole
// punched under the host filesystem's inode lock. A log write waits for its
// discards (writeLog without fs.mu, compaction with it held, stalling every
// other operation), so their number is what a sync waits for.
func discardRanges(list [][2]uint64) [][2]int64 {
	sorted := slices.Clone(list)
	slices.SortFunc(sorted, func(a, b [2]uint64) int { return cmp.Compare(a[0], b[0]) })
	var out [][2]int64
	for _, r := range sorted {
		start, end := int64(r[0])*format.BlockSize, int64(r[0]+r[1])*format.BlockSize
		if k := len(out) - 1; k >= 0 && out[k][0]+out[k][1] >= start {
			out[k][1] = max(out[k][1], end-out[k][0])
			continue
		}
		if len(out) == maxDiscards {
			break
		}
		out = append(out, [2]int64{start, end - start})
	}
	return out
}

// allocRun allocates volume blocks for up to want file blocks following
// Nanos' policy (docs/format.md, "Allocation"): first fit of min(want,
// 65536) blocks, halving down to 2048 when nothing fits. It returns the
// start and count.
func (fs *FS) allocRun(want uint64) (uint64, uint64, bool) {
	fs.ensureLogAreas()
	n := min(want, maxExtentBlocks)
	for {
		if fs.free.FreeBlocks() >= n+fs.logReserveShortfall() {
			if s, ok := fs.free.Alloc(n); ok {
				return s, n, true
			}
		}
		if n <= minExtentAllocBlk {
			return 0, 0, false
		}
		n /= 2
	}
}

// allocGap allocates [g0, g1) of file n: grow the preceding extent in
// place when the blocks after it are free, else new extents. The created
// extents are pending (not logged) unless uninited is set, in which case
// they are logged as uninitialised at once (fallocate).
func (fs *FS) allocGap(n *Node, g0, g1 uint64, uninited bool) error {
	for g0 < g1 {
		if prev := n.extentAt(g0 - 1); g0 > 0 && prev != nil && prev.end() == g0 && prev.length == prev.allocated &&
			prev.uninited == uninited && (prev.pending || !uninited) {
			// Growing in place. A logged base is grown through a separate
			// pending piece merged at commit (CommitWrite), so its logged
			// length never covers unwritten blocks.
			span := prev.length
			if prev.pending {
				// A pending growth piece merges into the logged extent
				// it grows at commit: the cap is on both together. A
				// piece after an extent too full to take it (a new
				// extent placed right after a full one, say) is logged
				// on its own, so only its own length counts.
				if base := n.extentAt(prev.fblock - 1); prev.fblock > 0 && base != nil && mergeable(base, prev) &&
					base.length+prev.length <= maxExtentBlocks {
					span += base.length
				}
			}
			if k := min(g1-g0, maxExtentBlocks-min(span, maxExtentBlocks)); k > 0 && fs.free.FreeBlocks() >= k+fs.logReserveShortfall() &&
				fs.free.AllocAt(prev.dblock+prev.allocated, k) {
				if prev.pending {
					prev.length += k
					prev.allocated += k
				} else {
					n.insertExtent(&extent{fblock: g0, dblock: prev.dblock + prev.allocated, length: k, allocated: k, pending: true})
				}
				fs.releaseReservation(n, g0, g0+k)
				g0 += k
				continue
			}
		}
		s, k, ok := fs.allocRun(g1 - g0)
		if !ok {
			return errnoErr("no free blocks for file data", syscall.ENOSPC)
		}
		e := &extent{fblock: g0, dblock: s, length: k, allocated: k, uninited: uninited, pending: true}
		n.insertExtent(e)
		fs.releaseReservation(n, g0, g0+k)
		if uninited {
			if err := fs.logNewExtent(n, e); err != nil {
				return err
			}
		}
		g0 += k
	}
	return nil
}

func (fs *FS) releaseReservation(n *Node, a, b uint64) {
	fs.reserved -= min(fs.reserved, n.resv.remove(a, b))
}
