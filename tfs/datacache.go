package tfs

import (
	"fmt"

	"github.com/tfsmount/tfsmount/heap"
	"github.com/tfsmount/tfsmount/pagecache"
)

// pageCache adapts the pagecache to dataCache.
type pageCache struct {
	c *pagecache.Cache
}

func newDataCache(fs *FS, opts Options) (dataCache, error) {
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
	return pageCache{c}, nil
}

// CacheStats returns the data cache's counters (hits, fills, write-backs,
// errors) and its current page counts.
func (fs *FS) CacheStats() pagecache.Stats {
	if p, ok := fs.data.(pageCache); ok {
		return p.c.Stats()
	}
	return pagecache.Stats{}
}

func (p pageCache) newFile(b pagecache.Backing) fileData { return p.c.NewNode(b) }
func (p pageCache) sync() error                          { return p.c.Sync() }
func (p pageCache) close() error                         { return p.c.Close() }
