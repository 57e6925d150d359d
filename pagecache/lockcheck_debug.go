//go:build tfsdebug

package pagecache

import (
	"bytes"
	"fmt"
	"runtime"
	"strconv"
	"sync"
)

// Debug build: every lock taken through the cache's helpers is recorded per
// goroutine, and taking one out of the order in lockorder.go panics.
// Goroutine ids are parsed from runtime.Stack, which is slow but only runs
// under the tfsdebug tag.

const debugChecks = true

var held = struct {
	sync.Mutex
	m map[uint64][]lockRank
}{m: map[uint64][]lockRank{}}

func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}

func lockAcquire(r lockRank) {
	id := goid()
	held.Lock()
	defer held.Unlock()
	for _, h := range held.m[id] {
		if h >= r {
			panic(fmt.Sprintf("pagecache: lock order violated: taking %s lock while holding %s lock", r, h))
		}
	}
	held.m[id] = append(held.m[id], r)
}

// lockTried records a lock obtained by TryLock: it may be out of order
// (TryLock never waits), but it is held until released.
func lockTried(r lockRank) {
	id := goid()
	held.Lock()
	defer held.Unlock()
	held.m[id] = append(held.m[id], r)
}

func lockRelease(r lockRank) {
	id := goid()
	held.Lock()
	defer held.Unlock()
	s := held.m[id]
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == r {
			s = append(s[:i], s[i+1:]...)
			if len(s) == 0 {
				delete(held.m, id)
			} else {
				held.m[id] = s
			}
			return
		}
	}
	panic(fmt.Sprintf("pagecache: releasing %s lock that is not held", r))
}

// assertNoLocksHeld panics if the calling goroutine holds a node, volume
// or state lock; it guards the places that call out (Backing) or wait for
// I/O. The node write-back lock is meant to be held there.
func assertNoLocksHeld(what string) {
	id := goid()
	held.Lock()
	defer held.Unlock()
	for _, h := range held.m[id] {
		if h != rankWriteback {
			panic(fmt.Sprintf("pagecache: %s while holding the %s lock", what, h))
		}
	}
}
