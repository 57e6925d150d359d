package blockdev

import (
	"sync/atomic"
	"time"
)

// Stats counts what a device did. The counters are updated with atomics at
// completion time (on a bh worker, or in the reaper for io_uring's fast
// path), so reading them never blocks I/O. Snapshot gives a consistent-enough
// copy for reporting (statfs, logs, benchmarks).
type Stats struct {
	reads, writes, flushes, discards atomic.Uint64
	readBytes, writtenBytes          atomic.Uint64
	errors, retries                  atomic.Uint64
	latencyNs, maxLatencyNs          atomic.Int64
}

// StatsSnapshot is a plain copy of a device's counters.
type StatsSnapshot struct {
	Reads, Writes, Flushes, Discards uint64
	ReadBytes, WrittenBytes          uint64
	Errors                           uint64        // requests completed with an error
	Retries                          uint64        // resubmissions after short transfers, EAGAIN or EINTR
	TotalLatency                     time.Duration // sum over completed requests
	MaxLatency                       time.Duration
}

// Requests is the number of completed requests of every kind.
func (s StatsSnapshot) Requests() uint64 { return s.Reads + s.Writes + s.Flushes + s.Discards }

// MeanLatency is the average time from Submit to completion.
func (s StatsSnapshot) MeanLatency() time.Duration {
	if n := s.Requests(); n > 0 {
		return s.TotalLatency / time.Duration(n)
	}
	return 0
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() StatsSnapshot {
	return StatsSnapshot{
		Reads: s.reads.Load(), Writes: s.writes.Load(), Flushes: s.flushes.Load(), Discards: s.discards.Load(),
		ReadBytes: s.readBytes.Load(), WrittenBytes: s.writtenBytes.Load(),
		Errors: s.errors.Load(), Retries: s.retries.Load(),
		TotalLatency: time.Duration(s.latencyNs.Load()), MaxLatency: time.Duration(s.maxLatencyNs.Load()),
	}
}

// monoStart is the reference for nowNs; time.Since on a fixed start uses the
// monotonic clock and does not allocate.
var monoStart = time.Now()

func nowNs() int64 { return int64(time.Since(monoStart)) }

// record counts one finished request. It allocates nothing and takes no
// lock, so the reaper may call it.
func (s *Stats) record(op Op, n int64, failed bool, startNs int64) {
	if s == nil {
		return
	}
	switch op {
	case OpRead:
		s.reads.Add(1)
		s.readBytes.Add(uint64(n))
	case OpWrite:
		s.writes.Add(1)
		s.writtenBytes.Add(uint64(n))
	case OpFlush:
		s.flushes.Add(1)
	case OpDiscard:
		s.discards.Add(1)
	}
	if failed {
		s.errors.Add(1)
	}
	if startNs != 0 {
		lat := nowNs() - startNs
		s.latencyNs.Add(lat)
		for {
			old := s.maxLatencyNs.Load()
			if lat <= old || s.maxLatencyNs.CompareAndSwap(old, lat) {
				break
			}
		}
	}
}

// StatsReporter is implemented by devices that keep Stats.
type StatsReporter interface {
	Stats() StatsSnapshot
}

// DeviceStats returns d's counters, or false if d keeps none.
func DeviceStats(d Device) (StatsSnapshot, bool) {
	if r, ok := d.(StatsReporter); ok {
		return r.Stats(), true
	}
	return StatsSnapshot{}, false
}
