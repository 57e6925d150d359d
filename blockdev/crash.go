package blockdev

import (
	"encoding/gob"
	"fmt"
	"io"
	"math/rand"
	"sort"
	"sync"

	"github.com/tfsmount/tfsmount/bh"
)

// Crash simulation. A recording Faulty device remembers every write,
// discard and flush it was asked for, with the moments they were submitted
// and completed, so that the images a power cut could leave can be built
// afterwards (the dm-log-writes method).
//
// The device model (docs/crash-ordering.md, "The device model"):
//   - a write that has completed may still sit in a volatile cache; it is
//     durable once a flush submitted after its completion has completed;
//   - a FUA write is durable when it completes, and makes nothing else so;
//   - any other write submitted before the power cut (completed or still
//     in flight) may be on the medium or not, independently of the others,
//     and a write of several sectors may have reached it in part;
//   - a sector (512 bytes) is written whole or not at all;
//   - a discard changes nothing that can be relied on: a device may go on
//     returning the old data, so crash images keep it (the worst case for
//     a filesystem that must never show one file's old data in another).
//
// Where two writes that both reached the medium overlap, the one that
// completed later wins; writes still in flight rank after every completed
// one, in submission order.

// SectorSize of the crash model: the unit that is never torn.
const crashSector = 512

// crashRecorder keeps the recording. Events are numbered in the order they
// happened (a submission or a completion each); that number is the clock
// crash points are given in.
type crashRecorder struct {
	mu     sync.Mutex
	base   []byte
	ops    []recorded // by submission
	events int
}

// recorded is one request as submitted (the data copied at Submit, when the
// buffers already belong to the device).
type recorded struct {
	op        Op
	off       int64
	data      []byte // write payload; nil for a discard or flush
	length    int64  // discard length
	fua       bool
	submitted int // event number of the submission
	completed int // event number of the completion; -1 while in flight
	ok        bool
}

func (r *recorded) end() int64 {
	if r.op == OpDiscard {
		return r.off + r.length
	}
	return r.off + int64(len(r.data))
}

// Record starts recording: it reads the inner device's whole content as the
// base image. Call it from a requester context (it waits for I/O), before
// the writes of interest.
func (f *Faulty) Record() error {
	base := make([]byte, f.inner.Size())
	if err := ReadAt(f.inner, base, 0); err != nil {
		return fmt.Errorf("faulty: read base image: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rec = &crashRecorder{base: base}
	return nil
}

func (f *Faulty) recorder() *crashRecorder {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rec
}

// Clock is the number of events recorded so far: an operation that starts
// when Clock is c cannot have caused any event numbered below c, and one
// that ended when it was c caused only events below c. It panics if Record
// was not called.
func (f *Faulty) Clock() int {
	c := f.recorder()
	if c == nil {
		panic("blockdev: Clock without Record")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.events
}

func (c *crashRecorder) onSubmit(r *Request) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := recorded{op: r.Op, off: r.Off, length: r.Length, fua: r.FUA && r.Op == OpWrite, submitted: c.events, completed: -1}
	c.events++
	if r.Op == OpWrite {
		for _, b := range r.Bufs {
			w.data = append(w.data, b...)
		}
	}
	c.ops = append(c.ops, w)
	return len(c.ops) - 1
}

func (c *crashRecorder) onDone(seq int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ops[seq].completed = c.events
	c.ops[seq].ok = err == nil
	c.events++
}

// Recording is a snapshot of what a recording device saw.
type Recording struct {
	base   []byte
	ops    []recorded
	events int
}

// Recording returns what was recorded so far. It panics if Record was not
// called.
func (f *Faulty) Recording() *Recording {
	c := f.recorder()
	if c == nil {
		panic("blockdev: Recording without Record")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return &Recording{base: c.base, ops: append([]recorded(nil), c.ops...), events: c.events}
}

// Events is the clock at the end of the recording.
func (r *Recording) Events() int { return r.events }

// Writes counts the writes and discards recorded.
func (r *Recording) Writes() int {
	n := 0
	for i := range r.ops {
		if r.ops[i].op == OpWrite || r.ops[i].op == OpDiscard {
			n++
		}
	}
	return n
}

// CrashPoints are the moments worth simulating a power cut at: just before
// each successful flush or FUA write completes (the last moment before
// more became durable), and the end of the recording. Sorted, distinct.
func (r *Recording) CrashPoints() []int {
	var pts []int
	for i := range r.ops {
		o := &r.ops[i]
		if o.ok && (o.op == OpFlush || o.fua) {
			pts = append(pts, o.completed)
		}
	}
	pts = append(pts, r.events)
	sort.Ints(pts)
	out := pts[:0]
	for i, p := range pts {
		if i == 0 || p != pts[i-1] {
			out = append(out, p)
		}
	}
	return out
}

// CrashWalker builds crash images at increasing crash points, keeping the
// durable image up to date instead of rebuilding it for every state.
type CrashWalker struct {
	r    *Recording
	at   int
	img  []byte
	rank []int32 // per sector: rank of the write that set it (-1: base)
	// order lists the writes that ever become durable by the moment they
	// do (durAt), so Advance only looks at the next few.
	order []int
	durAt []int // by op: event number at which it is durable; -1 never
	next  int   // order[:next] are applied
}

// Walker starts a walk at the beginning of the recording.
func (r *Recording) Walker() *CrashWalker {
	w := &CrashWalker{r: r, img: append([]byte(nil), r.base...), durAt: make([]int, len(r.ops))}
	w.rank = make([]int32, (len(r.base)+crashSector-1)/crashSector)
	for i := range w.rank {
		w.rank[i] = -1
	}
	// Successful flushes by submission, with the earliest completion among
	// those submitted at or after each one (a suffix minimum): a write
	// completed at c is durable once the first flush submitted after c
	// completes.
	var fl []int
	for i := range r.ops {
		if o := &r.ops[i]; o.op == OpFlush && o.ok {
			fl = append(fl, i)
		}
	}
	sort.Slice(fl, func(a, b int) bool { return r.ops[fl[a]].submitted < r.ops[fl[b]].submitted })
	sufMin := make([]int, len(fl)+1)
	sufMin[len(fl)] = -1
	for j := len(fl) - 1; j >= 0; j-- {
		c := r.ops[fl[j]].completed
		if m := sufMin[j+1]; m >= 0 && m < c {
			c = m
		}
		sufMin[j] = c
	}
	for i := range r.ops {
		o := &r.ops[i]
		w.durAt[i] = -1
		if (o.op != OpWrite && o.op != OpDiscard) || !o.ok {
			continue
		}
		if o.fua {
			w.durAt[i] = o.completed + 1
		} else {
			j := sort.Search(len(fl), func(j int) bool { return r.ops[fl[j]].submitted > o.completed })
			if m := sufMin[j]; m >= 0 {
				w.durAt[i] = m + 1
			}
		}
		if w.durAt[i] >= 0 {
			w.order = append(w.order, i)
		}
	}
	sort.SliceStable(w.order, func(a, b int) bool { return w.durAt[w.order[a]] < w.durAt[w.order[b]] })
	return w
}

// rankOf orders writes for overlap resolution: completion order, with
// writes in flight at the crash after every completed one.
func (w *CrashWalker) rankOf(i int) int32 {
	o := &w.r.ops[i]
	if o.completed >= 0 && o.completed < w.at {
		return int32(o.completed)
	}
	return int32(w.r.events + o.submitted)
}

// Advance moves the walk to a crash just before event at (never backwards):
// every write that is durable by then is applied to the durable image.
func (w *CrashWalker) Advance(at int) {
	if at < w.at {
		panic(fmt.Sprintf("blockdev: CrashWalker.Advance(%d) after %d", at, w.at))
	}
	w.at = at
	for ; w.next < len(w.order) && w.durAt[w.order[w.next]] <= at; w.next++ {
		i := w.order[w.next]
		apply(w.img, w.rank, &w.r.ops[i], w.rankOf(i), nil)
	}
}

// PendingWrite is a write (or discard) that may or may not be on the
// medium.
type PendingWrite struct {
	Index   int   // in the recording
	Off     int64 // byte offset
	Sectors int   // sectors it covers: a torn write keeps some of them
	Discard bool
}

// Pending lists, in submission order, the writes and discards submitted
// before the crash point that are not durable there.
func (w *CrashWalker) Pending() []PendingWrite {
	var out []PendingWrite
	for i := range w.r.ops {
		o := &w.r.ops[i]
		durable := w.durAt[i] >= 0 && w.durAt[i] <= w.at
		if (o.op != OpWrite && o.op != OpDiscard) || durable || o.submitted >= w.at {
			continue
		}
		s0, s1 := o.off/crashSector, (o.end()+crashSector-1)/crashSector
		out = append(out, PendingWrite{Index: i, Off: o.off, Sectors: int(s1 - s0), Discard: o.op == OpDiscard})
	}
	return out
}

// Kept is a pending write that reached the medium: whole (Sectors nil) or
// only the sectors marked true (a torn write).
type Kept struct {
	Index   int
	Sectors []bool
}

// Image returns the durable image with the kept writes applied.
func (w *CrashWalker) Image(kept []Kept) []byte {
	img := append([]byte(nil), w.img...)
	if len(kept) == 0 {
		return img
	}
	rank := append([]int32(nil), w.rank...)
	for _, k := range kept {
		apply(img, rank, &w.r.ops[k.Index], w.rankOf(k.Index), k.Sectors)
	}
	return img
}

// Device returns the crash image with the kept writes applied as a
// read-only device, without copying the image: reads see the kept writes'
// sectors over the durable image. It is valid until the next Advance.
func (w *CrashWalker) Device(q *bh.Queue, kept []Kept) Device {
	ov := &overlay{q: q, base: w.img, sectors: map[int64][]byte{}}
	rank := map[int64]int32{}
	for _, k := range kept {
		r := w.rankOf(k.Index)
		layer(&w.r.ops[k.Index], r, k.Sectors,
			func(s int64) int32 {
				if have, ok := rank[s]; ok {
					return have
				}
				return w.rank[s]
			},
			func(s int64) []byte {
				rank[s] = r
				sec, ok := ov.sectors[s]
				if !ok {
					sec = append([]byte(nil), w.img[s*crashSector:(s+1)*crashSector]...)
					ov.sectors[s] = sec
				}
				return sec
			})
	}
	return ov
}

// overlay is a read-only device: sectors over a base image.
type overlay struct {
	q       *bh.Queue
	base    []byte
	sectors map[int64][]byte
}

func (v *overlay) Submit(r *Request) {
	if err := Check(r, int64(len(v.base)), true); err != nil {
		complete(v.q, r, 0, err)
		return
	}
	var n int64
	if r.Op == OpRead {
		off := r.Off
		for _, b := range r.Bufs {
			for i := 0; i < len(b); {
				s := (off + int64(i)) / crashSector
				in := int((off + int64(i)) % crashSector)
				k := min(len(b)-i, crashSector-in)
				if sec, ok := v.sectors[s]; ok {
					copy(b[i:i+k], sec[in:in+k])
				} else {
					copy(b[i:i+k], v.base[s*crashSector+int64(in):])
				}
				i += k
			}
			off += int64(len(b))
			n += int64(len(b))
		}
	}
	complete(v.q, r, n, nil)
}

func (v *overlay) Size() int64     { return int64(len(v.base)) }
func (v *overlay) SectorSize() int { return crashSector }
func (v *overlay) ReadOnly() bool  { return true }
func (v *overlay) Close() error    { return nil }

// apply writes o into img where it outranks what the sectors hold; sectors,
// if not nil, says which of o's sectors reached the medium.
func apply(img []byte, rank []int32, o *recorded, r int32, sectors []bool) {
	layer(o, r, sectors, func(s int64) int32 { return rank[s] }, func(s int64) []byte {
		rank[s] = r
		return img[s*crashSector : (s+1)*crashSector]
	})
}

// layer lays write o, of rank r, over a sector store: each of its sectors
// (those keep marks, if keep is not nil) where it outranks what the sector
// holds (rankAt), into the sector's bytes (sector, which also records r).
// Discards change nothing (see the device model above).
func layer(o *recorded, r int32, keep []bool, rankAt func(s int64) int32, sector func(s int64) []byte) {
	if o.op != OpWrite {
		return
	}
	first := o.off / crashSector
	for s := first; s*crashSector < o.end(); s++ {
		if (keep != nil && !keep[s-first]) || rankAt(s) > r {
			continue
		}
		lo, hi := max(o.off, s*crashSector), min(o.end(), (s+1)*crashSector)
		copy(sector(s)[lo-s*crashSector:hi-s*crashSector], o.data[lo-o.off:hi-o.off])
	}
}

// CrashImage returns a device content a crash now could leave: every
// durable write applied, and each other write applied or not at random
// (whole). With rng nil, only durable writes are applied. It panics if
// Record was not called.
func (f *Faulty) CrashImage(rng *rand.Rand) []byte {
	r := f.Recording()
	w := r.Walker()
	w.Advance(r.events)
	if rng == nil {
		return w.Image(nil)
	}
	var kept []Kept
	for _, p := range w.Pending() {
		if rng.Intn(2) == 0 {
			kept = append(kept, Kept{Index: p.Index})
		}
	}
	return w.Image(kept)
}

// savedOp is recorded as Save writes it (gob needs exported fields).
type savedOp struct {
	Op                   Op
	Off, Length          int64
	Data                 []byte
	FUA, OK              bool
	Submitted, Completed int
}

// Save writes the recording, without its base image, to w: a test that
// made the base image itself (a real mount's daemon recording its device,
// say) rebuilds crash states from it with LoadRecording.
func (r *Recording) Save(w io.Writer) error {
	ops := make([]savedOp, len(r.ops))
	for i, o := range r.ops {
		ops[i] = savedOp{o.op, o.off, o.length, o.data, o.fua, o.ok, o.submitted, o.completed}
	}
	return gob.NewEncoder(w).Encode(struct {
		Events int
		Ops    []savedOp
	}{r.events, ops})
}

// LoadRecording reads what Save wrote, over the base image it started from.
func LoadRecording(rd io.Reader, base []byte) (*Recording, error) {
	var saved struct {
		Events int
		Ops    []savedOp
	}
	if err := gob.NewDecoder(rd).Decode(&saved); err != nil {
		return nil, fmt.Errorf("read a recording: %w", err)
	}
	r := &Recording{base: base, events: saved.Events, ops: make([]recorded, len(saved.Ops))}
	for i, o := range saved.Ops {
		if o.Off < 0 || o.Off+int64(len(o.Data)) > int64(len(base)) || o.Off+o.Length > int64(len(base)) {
			return nil, fmt.Errorf("recording: %s at %d runs past the %d-byte base image", o.Op, o.Off, len(base))
		}
		r.ops[i] = recorded{op: o.Op, off: o.Off, length: o.Length, data: o.Data, fua: o.FUA, ok: o.OK, submitted: o.Submitted, completed: o.Completed}
	}
	return r, nil
}
