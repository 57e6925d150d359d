package pagecache

// Background write-back. Without it, dirty data waits for the timer or
// for an allocation that finds the cache full of it; the writer then
// stalls while a whole node goes to the device, and copying and device
// writes never overlap. Instead, once more than a share of the budget is
// dirty, the timer goroutine (the only one besides FUSE threads that may
// wait for I/O and call the Backing) writes back the oldest dirty nodes
// until the dirty share is back under half that mark, while writers go on
// copying. A node's write-back takes every page dirty at that moment, so
// each round carries about what was written during the previous one.

// bgDirtyShare is the share of the budget (1/bgDirtyShare) of dirty pages
// above which write-back starts in the background.
const bgDirtyShare = 8

// bgDirtyMark is the dirty page count that starts background write-back.
func (c *Cache) bgDirtyMark() int64 { return max(1, c.budget/bgDirtyShare) }

// noteDirty is called by setState after a page became dirty, with the
// state lock held: past the mark it nudges the flusher, without blocking
// and without running anything.
func (st *stateLocked) noteDirty() {
	c := st.c
	if c.kick == nil || c.dirtyPages <= c.bgDirtyMark() {
		return
	}
	select {
	case c.kick <- struct{}{}:
	default: // already nudged
	}
}

// writebackExcess writes back the oldest dirty nodes until at most half
// the mark is dirty. It stops early when asked to stop, when no node is
// dirty, or when a write-back fails (the error stays sticky on its node;
// retrying at once would only spin).
func (c *Cache) writebackExcess() {
	low := c.bgDirtyMark() / 2
	for {
		select {
		case <-c.stopTimer:
			return
		default:
		}
		st := c.lockState()
		dirty := c.dirtyPages
		st.unlock()
		if dirty <= low {
			return
		}
		nodes := c.oldestDirty(1)
		if len(nodes) == 0 {
			return
		}
		if err := nodes[0].writeback(); err != nil {
			return
		}
	}
}
