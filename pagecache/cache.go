package pagecache

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/heap"
)

// Config configures a Cache.
type Config struct {
	Device blockdev.Device
	Queue  *bh.Queue
	Pool   *heap.PagePool
	// Budget is how many bytes of pages the cache may hold (0:
	// DefaultBudget).
	// The pool's own budget applies as well.
	Budget int64
	// WritebackDelay is how old dirty data may get before the timer writes
	// it back (0: DefaultWritebackDelay); a negative value disables the
	// timer.
	WritebackDelay time.Duration
	// Logf receives device and write-back errors, rate-limited. May be nil.
	Logf func(format string, args ...any)
}

// DefaultWritebackDelay is how old dirty data may get before the timer
// writes it back when Config.WritebackDelay is 0. tfs writes staged
// metadata at the same interval, so this is the one write-back delay of a
// mount (README.md, Durability).
const DefaultWritebackDelay = 2 * time.Second

// DefaultBudget is the cache budget in bytes when none is configured:
// Config.Budget 0, tfs.Options.CacheSize 0, and tfsmount without
// cache_size=.
const DefaultBudget = 256 << 20

const (
	// maxRunPages bounds one fill or write-back request (1 MiB).
	maxRunPages = 256
	// evictBatch is how many pages an allocation evicts at once when
	// the cache is full, so eviction is not paid page by page.
	evictBatch = 16
	// closeWait bounds how long Close waits for I/O in flight on pages
	// it dropped.
	closeWait = 10 * time.Second
)

// Stats are counters since New, and the current page counts.
type Stats struct {
	Hits           int64 // pages a read found valid in the cache
	Misses         int64 // pages a read had to fill (or wait for)
	Fills          int64 // device read requests issued for fills
	FillPages      int64 // pages filled (including read-ahead and RMW)
	ReadAheadPages int64 // pages filled ahead of a sequential reader
	RMWFills       int64 // partial-page writes that had to read the page first
	Writebacks     int64 // device write requests issued by write-back
	WritebackPages int64 // pages written back
	Evictions      int64 // pages whose buffer was freed to make room
	ReadErrors     int64 // failed fills
	WriteErrors    int64 // failed write-backs (PrepareWrite or device)
	NoMemory       int64 // allocations that failed even after draining
	CachedPages    int64 // pages holding a buffer now
	DirtyPages     int64 // dirty pages now
}

type counters struct {
	hits, misses, fills, fillPages, readAhead, rmw   atomic.Int64
	writebacks, wbPages, evictions, readErrs, wrErrs atomic.Int64
	noMemory                                         atomic.Int64
}

// Cache is the page cache of one volume (one device): the state lock and
// the global LRU of evictable pages, the set of nodes, the budget and the
// write-back timer.
//
// Lock order (lockorder.go): Node.wb -> Node.mu -> (volMu | stateMu);
// volMu and stateMu are leaves, never held together. No callback runs
// under stateMu.
type Cache struct {
	dev    blockdev.Device
	q      *bh.Queue
	pool   *heap.PagePool
	budget int64 // pages
	delay  time.Duration
	stats  counters
	// logf receives errors through logLimit (logError).
	logf     func(format string, args ...any)
	logLimit LogLimiter

	stateMu sync.Mutex
	st      stateLocked // the capability handed out by lockState
	// Guarded by stateMu.
	lru           lru
	cachedPages   int64
	dirtyPages    int64
	inflightPages int64 // pages in reading or writing, all nodes

	// wbActive counts write-backs between collecting their pages and
	// unpinning them: their pages come back to the LRU when they end.
	wbActive atomic.Int32

	volMu sync.Mutex
	// Guarded by volMu.
	nodes map[*Node]struct{}
	dirty dirtyList // nodes with dirty pages, oldest first

	stopTimer chan struct{}
	timerDone chan struct{}
	// kick nudges the timer goroutine to write back in the background
	// (flusher.go); nil when the timer is off.
	kick      chan struct{}
	closeOnce sync.Once
}

// stateLocked is proof that the state lock is held: the methods that need
// it take one, and only lockState hands one out.
type stateLocked struct{ c *Cache }

func (c *Cache) lockState() *stateLocked {
	lockAcquire(rankState)
	c.stateMu.Lock()
	return &c.st
}

func (st *stateLocked) unlock() {
	st.c.stateMu.Unlock()
	lockRelease(rankState)
}

func (c *Cache) lockVolume() {
	lockAcquire(rankVolume)
	c.volMu.Lock()
}

func (c *Cache) unlockVolume() {
	c.volMu.Unlock()
	lockRelease(rankVolume)
}

// New returns a cache over cfg.Device and starts its write-back timer.
func New(cfg Config) (*Cache, error) {
	if cfg.Device == nil || cfg.Queue == nil || cfg.Pool == nil {
		return nil, errors.New("pagecache: Config needs a Device, a Queue and a Pool")
	}
	budget := cfg.Budget
	if budget == 0 {
		budget = DefaultBudget
	}
	if budget < 2*PageSize {
		return nil, fmt.Errorf("pagecache: budget of %d bytes is below two pages", budget)
	}
	delay := cfg.WritebackDelay
	if delay == 0 {
		delay = DefaultWritebackDelay
	}
	c := &Cache{
		dev:       cfg.Device,
		q:         cfg.Queue,
		pool:      cfg.Pool,
		budget:    budget / PageSize,
		delay:     delay,
		logf:      cfg.Logf,
		logLimit:  LogLimiter{Burst: logBurst},
		nodes:     map[*Node]struct{}{},
		stopTimer: make(chan struct{}),
		timerDone: make(chan struct{}),
	}
	c.st.c = c
	c.lru.init()
	c.dirty.init()
	if delay > 0 {
		c.kick = make(chan struct{}, 1)
		go c.timer()
	} else {
		close(c.timerDone)
	}
	return c, nil
}

// Stats returns the counters and the current page counts.
func (c *Cache) Stats() Stats {
	s := Stats{
		Hits:           c.stats.hits.Load(),
		Misses:         c.stats.misses.Load(),
		Fills:          c.stats.fills.Load(),
		FillPages:      c.stats.fillPages.Load(),
		ReadAheadPages: c.stats.readAhead.Load(),
		RMWFills:       c.stats.rmw.Load(),
		Writebacks:     c.stats.writebacks.Load(),
		WritebackPages: c.stats.wbPages.Load(),
		Evictions:      c.stats.evictions.Load(),
		ReadErrors:     c.stats.readErrs.Load(),
		WriteErrors:    c.stats.wrErrs.Load(),
		NoMemory:       c.stats.noMemory.Load(),
	}
	st := c.lockState()
	s.CachedPages = c.cachedPages
	s.DirtyPages = c.dirtyPages
	st.unlock()
	return s
}

// Sync writes back every dirty node and waits for it, and reports (and
// clears) every node's sticky write-back error. It returns the first error.
// Like Node.Sync it must not be called with the filesystem's metadata
// mutex held.
func (c *Cache) Sync() error {
	var first error
	for _, n := range c.nodeList() {
		if err := n.Sync(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (c *Cache) nodeList() []*Node {
	c.lockVolume()
	defer c.unlockVolume()
	list := make([]*Node, 0, len(c.nodes))
	for n := range c.nodes {
		list = append(list, n)
	}
	return list
}

// Close stops the timer, syncs, and frees every page, so the pool is back
// to what it was before New. Dirty data that could not be written back is
// discarded; the error says so. Nodes must not be used after Close.
func (c *Cache) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.stopTimer)
		<-c.timerDone
		err = c.Sync()
		for _, n := range c.nodeList() {
			n.Drop()
		}
		// Dropped pages with I/O in flight (read-ahead, say) are freed
		// when it completes; give it a bounded time to.
		left := int64(0)
		for wait := time.Duration(0); wait < closeWait; wait += time.Millisecond {
			st := c.lockState()
			left = c.cachedPages
			st.unlock()
			if left == 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if left != 0 && err == nil {
			err = fmt.Errorf("pagecache: %d pages still pinned or in flight at close", left)
		}
	})
	return err
}

// timer writes back nodes whose dirty data is older than the delay, and
// writes back in the background when too much of the cache is dirty. It
// runs the write-back itself rather than posting it to the bhqueue,
// because write-back waits for I/O and calls the Backing, which no bh
// worker may do.
func (c *Cache) timer() {
	defer close(c.timerDone)
	period := min(max(c.delay/4, time.Millisecond), time.Second)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-c.stopTimer:
			return
		case now := <-t.C:
			c.writebackOlderThan(now.Add(-c.delay))
		case <-c.kick:
			c.writebackExcess()
		}
	}
}

// writebackOlderThan writes back the nodes dirty since before t. Errors
// stay sticky on their nodes (and are logged) until the next Sync.
func (c *Cache) writebackOlderThan(t time.Time) {
	c.lockVolume()
	due := c.dirty.dirtySinceBefore(t)
	c.unlockVolume()
	for _, n := range due {
		n.writeback()
	}
}

// markDirty records that n has dirty pages. Caller holds n's lock.
//
// A node is listed only after its pages turned dirty, and each of those
// pages may already have nudged the flusher (noteDirty). A flusher that ran
// in between found no dirty node to write back, and later nudges were
// dropped as already pending, so nudge again once the node is listed.
func (c *Cache) markDirty(n *Node) {
	c.lockVolume()
	listed := !n.onDirty && !n.dropped
	if listed {
		c.dirty.pushBack(n, time.Now())
	}
	c.unlockVolume()
	if listed {
		st := c.lockState()
		st.noteDirty()
		st.unlock()
	}
}

// markClean records that n has no dirty pages. Caller holds n's lock.
func (c *Cache) markClean(n *Node) {
	c.lockVolume()
	c.dirty.remove(n)
	c.unlockVolume()
}

// logBurst is how many messages a second the cache logs.
const logBurst = 10

// logError passes a device or write-back error to Config.Logf, at most
// logBurst a second, so a failing device cannot flood the log.
func (c *Cache) logError(format string, args ...any) {
	if c.logf == nil {
		return
	}
	ok, dropped := c.logLimit.Allow(time.Now())
	if dropped > 0 {
		c.logf("pagecache: %d similar messages suppressed", dropped)
	}
	if ok {
		c.logf(format, args...)
	}
}
