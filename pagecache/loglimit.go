package pagecache

import (
	"sync"
	"time"
)

// LogLimiter lets at most Burst messages through per second and counts
// the rest, so that a failing device, or a corrupt directory read in a
// loop, cannot flood the log. The cache limits its own messages with one;
// the FUSE layer uses one for the errors it logs.
type LogLimiter struct {
	Burst int // messages let through per second

	mu      sync.Mutex
	start   time.Time // when the second being counted began
	n       int       // messages let through since start
	dropped int       // messages held back since the last one let through
}

// Allow reports whether a message at now may be logged and, if it may, how
// many were held back before it (for a "N similar messages suppressed"
// line ahead of it).
func (l *LogLimiter) Allow(now time.Time) (ok bool, dropped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= time.Second {
		l.start, l.n = now, 0
	}
	if l.n >= l.Burst {
		l.dropped++
		return false, 0
	}
	l.n++
	dropped, l.dropped = l.dropped, 0
	return true, dropped
}
