package main

import (
	"fmt"
	"io"

	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/fusefs"
)

// statsWriter is implemented by layers that keep their own counters (the
// pagecache's hits and misses, through tfs.FS); each writes its lines.
type statsWriter interface {
	WriteStats(w io.Writer)
}

// writeStats logs what the layers of a mount can tell about themselves.
func writeStats(w io.Writer, st *mountState) {
	fmt.Fprintf(w, "stats: bhqueue depth %d; page buffers in use %d, high water %d, budget %d (4 KiB each)\n",
		st.q.Len(), st.pool.InUse(), st.pool.HighWater(), st.pool.Budget())
	if d, ok := blockdev.DeviceStats(st.dev); ok {
		fmt.Fprintf(w, "stats: device %s: %d reads (%s), %d writes (%s), %d flushes, %d discards; latency mean %v max %v; %d errors, %d retries\n",
			blockdev.Describe(st.dev), d.Reads, humanBytes(int64(d.ReadBytes)), d.Writes, humanBytes(int64(d.WrittenBytes)),
			d.Flushes, d.Discards, d.MeanLatency(), d.MaxLatency, d.Errors, d.Retries)
	}
	if st.root != nil {
		fmt.Fprintf(w, "stats: FUSE requests failed with unexpected errors (EIO): %d\n", fusefs.Errors(st.root))
	}
	if sw, ok := any(st.fsys).(statsWriter); ok {
		sw.WriteStats(w)
	}
}
