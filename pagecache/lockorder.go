package pagecache

// Lock order (outermost first). A goroutine may take a lock only if every
// lock it already holds comes earlier in this list:
//
//	Node.wb     serialises write-back of one node; held across I/O waits and
//	            Backing calls, so only goroutines that may block take it
//	            (FUSE threads, the write-back timer), never a bh worker.
//	Node.mu     the node lock: page index, dirty set, size, sticky error.
//	Cache.volMu leaf: the set of nodes.
//	Cache.state leaf: page states, pins, waiters, the LRU, counters.
//
// volMu and state are never held together. No callback runs while the
// state lock is held: waiters are collected under it and run after it is
// released. Backing methods are never called with Node.mu or state held.
// The one exception to the order is eviction from inside an allocation,
// which holds state and TryLocks another node's lock: a TryLock never
// waits, so it cannot deadlock, and a failure just skips that page.
//
// The tfsdebug build checks the order at run time (lockcheck_debug.go).
type lockRank uint8

const (
	rankWriteback lockRank = iota + 1
	rankNode
	rankVolume
	rankState
)

func (r lockRank) String() string {
	switch r {
	case rankWriteback:
		return "node write-back"
	case rankNode:
		return "node"
	case rankVolume:
		return "volume"
	case rankState:
		return "state"
	}
	return "unknown"
}
