package main

import (
	"fmt"
	"io"

	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/fusefs"
)

// writeStats logs what the layers of a mount can tell about themselves.
func writeStats(w io.Writer, st *mountState) {
	fmt.Fprintf(w, "stats: bhqueue depth %d; page buffers in use %d, high water %d, budget %d (4 KiB each)\n",
		st.q.Len(), st.pool.InUse(), st.pool.HighWater(), st.pool.Budget())
	if d, ok := blockdev.DeviceStats(st.dev); ok {
		fmt.Fprintf(w, "stats: device %s: %d reads (%s), %d writes (%s), %d flushes, %d discards; latency mean %v max %v; %d errors, %d retries\n",
			blockdev.Describe(st.dev), d.Reads, humanBytes(int64(d.ReadBytes)), d.Writes, humanBytes(int64(d.WrittenBytes)),
			d.Flushes, d.Discards, d.MeanLatency(), d.MaxLatency, d.Errors, d.Retries)
	}
	if st.server != nil {
		if n, ok := st.server.URingRequests(); ok {
			fmt.Fprintf(w, "stats: FUSE requests served over io_uring: %d\n", n)
		}
	}
	if st.root != nil {
		fmt.Fprintf(w, "stats: FUSE requests failed with unexpected errors (EIO): %d\n", fusefs.Errors(st.root))
	}
	if st.fsys != nil {
		c := st.fsys.CacheStats()
		fmt.Fprintf(w, "stats: page cache: %d hits, %d misses, %d fills (%d pages, %d read ahead), %d RMW fills, %d write-backs (%d pages), %d evictions, %d read errors, %d write errors, %d out-of-memory; %d pages cached, %d dirty\n",
			c.Hits, c.Misses, c.Fills, c.FillPages, c.ReadAheadPages, c.RMWFills, c.Writebacks, c.WritebackPages,
			c.Evictions, c.ReadErrors, c.WriteErrors, c.NoMemory, c.CachedPages, c.DirtyPages)
	}
}
