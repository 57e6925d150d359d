//go:build !tfsdebug

package pagecache

// Release build: the lock-order checks compile away.

const debugChecks = false

func lockAcquire(lockRank)     {}
func lockRelease(lockRank)     {}
func lockTried(lockRank)       {}
func assertNoLocksHeld(string) {}
