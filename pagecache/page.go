package pagecache

import (
	"fmt"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/heap"
)

// PageSize is the size of one cached page.
const PageSize = heap.PageSize

// pageState is where a page is in its life. The legal moves are listed in
// legalTransitions; setState refuses (panics on) anything else, because an
// illegal move means the bookkeeping is already wrong and continuing could
// write stale data to the device.
type pageState uint8

const (
	stateFree    pageState = iota // no buffer (new struct, evicted or freed)
	stateAlloc                    // buffer held, contents not valid (new, or a fill failed, or dirty data discarded)
	stateReading                  // fill in flight: the device owns the buffer
	stateClean                    // valid and equal to what the device holds (or a hole)
	stateDirty                    // valid and newer than the device
	stateWriting                  // write-back in flight: the buffer is read-only
	numStates
)

func (s pageState) String() string {
	switch s {
	case stateFree:
		return "free"
	case stateAlloc:
		return "alloc"
	case stateReading:
		return "reading"
	case stateClean:
		return "clean"
	case stateDirty:
		return "dirty"
	case stateWriting:
		return "writing"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// legalTransitions[from][to] is true for every move the cache makes:
//
//	free    -> alloc    a buffer was allocated for the page
//	alloc   -> reading  a fill was issued
//	alloc   -> dirty    a write covered every byte that matters (whole page, or past EOF)
//	alloc   -> free     evicted, dropped or freed at close
//	reading -> clean    the fill succeeded
//	reading -> alloc    the fill failed: the page is "not present" again, never
//	                    clean with unread contents; every waiter gets the error and
//	                    the next read issues a new fill
//	clean   -> dirty    a write changed the page
//	clean   -> free     evicted, dropped or freed at close
//	dirty   -> writing  write-back issued
//	dirty   -> alloc    dirty data discarded (truncate, punch, drop)
//	writing -> clean    write-back succeeded
//	writing -> dirty    write-back failed: the data stays dirty for a retry
var legalTransitions = [numStates][numStates]bool{
	stateFree:    {stateAlloc: true},
	stateAlloc:   {stateReading: true, stateDirty: true, stateFree: true},
	stateReading: {stateClean: true, stateAlloc: true},
	stateClean:   {stateDirty: true, stateFree: true},
	stateDirty:   {stateWriting: true, stateAlloc: true},
	stateWriting: {stateClean: true, stateDirty: true},
}

// checkTransition reports whether from -> to is a legal move.
func checkTransition(from, to pageState) error {
	if from >= numStates || to >= numStates || !legalTransitions[from][to] {
		return fmt.Errorf("pagecache: illegal page transition %s -> %s", from, to)
	}
	return nil
}

// page is one 4 KiB page of one file.
//
// Invariants (checked by checkInvariants in tests):
//   - buf != nil exactly when state != stateFree.
//   - onLRU exactly when state is clean or alloc and the page is not detached:
//     the LRU holds every page eviction may consider (it still skips pinned
//     ones).
//   - refs counts the users that pinned the page (a reader or writer that
//     will copy, a write-back waiting for CommitWrite); a page in reading or
//     writing state is also pinned by that state, so the device never writes
//     into or reads from a freed buffer. At rest refs == 0.
//   - waiters is non-empty only while state is reading or writing.
//   - detached pages are no longer in their node's index (truncated, punched
//     or dropped); their buffer is freed when the last pin and the last I/O
//     let go.
type page struct {
	node  *Node // immutable
	index int64 // immutable: file offset / PageSize
	buf   []byte

	// Guarded by the cache's state lock.
	state    pageState
	refs     int32
	waiters  []bh.Done
	detached bool
	onLRU    bool
	lruPrev  *page
	lruNext  *page
}

func (p *page) off() int64 { return p.index * PageSize }

// lru is the list of evictable candidates, oldest first. Guarded by the
// state lock. The zero value is not ready: call init.
type lru struct {
	head page // sentinel: head.lruNext is the oldest
	n    int
}

func (l *lru) init() {
	l.head.lruNext = &l.head
	l.head.lruPrev = &l.head
}

func (l *lru) pushBack(p *page) {
	p.lruPrev = l.head.lruPrev
	p.lruNext = &l.head
	l.head.lruPrev.lruNext = p
	l.head.lruPrev = p
	p.onLRU = true
	l.n++
}

func (l *lru) remove(p *page) {
	p.lruPrev.lruNext = p.lruNext
	p.lruNext.lruPrev = p.lruPrev
	p.lruPrev, p.lruNext = nil, nil
	p.onLRU = false
	l.n--
}

// touch moves p to the young end of the list.
func (l *lru) touch(p *page) {
	if p.onLRU {
		l.remove(p)
		l.pushBack(p)
	}
}

// setState moves p to state to. Caller holds the state lock (st proves it).
// It keeps the LRU and the counters in step with the state, so the
// invariants above hold after every move.
func (st *stateLocked) setState(p *page, to pageState) {
	c := st.c
	from := p.state
	if err := checkTransition(from, to); err != nil {
		panic(fmt.Sprintf("%v (page %d)", err, p.index))
	}
	if p.onLRU {
		c.lru.remove(p)
	}
	switch from {
	case stateDirty:
		c.dirtyPages--
	case stateReading, stateWriting:
		p.node.inflight--
		c.inflightPages--
	}
	p.state = to
	switch to {
	case stateClean, stateAlloc:
		if !p.detached {
			c.lru.pushBack(p)
		}
	case stateDirty:
		c.dirtyPages++
		st.noteDirty()
	case stateReading, stateWriting:
		p.node.inflight++
		c.inflightPages++
	}
}

// takeWaiters removes and returns p's waiters; the caller runs them after
// releasing the state lock.
func (st *stateLocked) takeWaiters(p *page) []bh.Done {
	w := p.waiters
	p.waiters = nil
	return w
}

// unpin drops one pin on p and frees the buffer of a detached page that no
// one uses any more.
func (st *stateLocked) unpin(p *page) {
	p.refs--
	if p.refs < 0 {
		panic(fmt.Sprintf("pagecache: page %d unpinned more often than pinned", p.index))
	}
	st.freeIfUnused(p)
}

// freeIfUnused frees the buffer of a detached page once nothing pins it
// and no I/O is in flight on it.
func (st *stateLocked) freeIfUnused(p *page) {
	if !p.detached || p.refs > 0 || p.state == stateReading || p.state == stateWriting || p.state == stateFree {
		return
	}
	if p.state == stateDirty {
		st.setState(p, stateAlloc)
	}
	st.freeBuf(p)
}

// freeBuf returns p's buffer to the pool. p must be clean or alloc.
func (st *stateLocked) freeBuf(p *page) {
	st.setState(p, stateFree)
	st.c.pool.Free(p.buf)
	p.buf = nil
	st.c.cachedPages--
}
