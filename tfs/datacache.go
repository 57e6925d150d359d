package tfs

import (
	"fmt"

	"github.com/tfsmount/tfsmount/heap"
	"github.com/tfsmount/tfsmount/pagecache"
)

// newDataCache starts the volume's data cache.
func newDataCache(fs *FS, opts Options) (*pagecache.Cache, error) {
	budget := opts.CacheSize
	if budget <= 0 {
		budget = pagecache.DefaultBudget
	}
	pool := opts.Pool
	if pool == nil {
		pool = heap.NewPagePool(heap.PoolConfig{Budget: budget})
	}
	delay := opts.WritebackDelay
	if fs.ro {
		delay = -1
	}
	// The cache limits the rate of its messages itself, so a failing
	// device cannot flood the daemon log.
	c, err := pagecache.New(pagecache.Config{Device: fs.dev, Queue: fs.q, Pool: pool, Budget: budget,
		WritebackDelay: delay, Logf: opts.Logf})
	if err != nil {
		return nil, fmt.Errorf("start the page cache: %w", err)
	}
	return c, nil
}

// CacheStats returns the data cache's counters (hits, fills, write-backs,
// errors) and its current page counts.
func (fs *FS) CacheStats() pagecache.Stats {
	if fs.data == nil {
		return pagecache.Stats{}
	}
	return fs.data.Stats()
}
