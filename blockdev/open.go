package blockdev

import (
	"fmt"
	"time"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/heap"
)

// OpenOptions configures Open.
type OpenOptions struct {
	ReadOnly bool
	// IO selects the backend: "auto" (or empty) tries io_uring and falls
	// back to the sync pool with a notice; "uring" fails if io_uring is
	// unavailable; "sync" uses the pool of pread/pwrite goroutines.
	IO string
	// Queue receives every completion. Required; it must outlive the device.
	Queue *bh.Queue
	// Pool, if set, has its slabs registered with io_uring so that requests
	// whose buffer lies inside one slab use READ_FIXED/WRITE_FIXED.
	Pool *heap.PagePool
	// Logf receives one-line notices (fallbacks); nil discards them.
	Logf func(format string, args ...any)
	// Depth is the number of requests in flight before Submit blocks:
	// io_uring slots, or sync worker goroutines. Default 64 (uring), 32 (sync).
	Depth int
	// Buffered disables O_DIRECT even where the file system allows it.
	Buffered bool
	// NBDTimeout is how long an NBD device retries a lost connection
	// before its requests fail with EIO (0: DefaultNBDTimeout).
	NBDTimeout time.Duration
}

// Open opens an image file or block device as a Device, or connects to an
// NBD export when path is an NBD URI (see NBDAddress). A second read-write
// Open of the same image fails while the first is open (flock).
func Open(path string, opts OpenOptions) (Device, error) {
	if opts.Queue == nil {
		return nil, fmt.Errorf("open %s: no bh queue given", path)
	}
	if IsNBDURI(path) {
		a, err := ParseNBDURI(path)
		if err != nil {
			return nil, err
		}
		return openNBD(a, opts)
	}
	mode := opts.IO
	if mode == "" {
		mode = "auto"
	}
	if mode != "auto" && mode != "uring" && mode != "sync" {
		return nil, fmt.Errorf("open %s: unknown I/O backend %q (want auto, uring or sync)", path, opts.IO)
	}
	f, err := openImage(path, opts.ReadOnly, opts.Buffered)
	if err != nil {
		return nil, err
	}
	if mode == "sync" {
		return newSyncDev(f, opts.Queue, depthOr(opts.Depth, 32), "requested"), nil
	}
	d, err := newUringDev(f, opts.Queue, opts.Pool, depthOr(opts.Depth, 64))
	if err == nil {
		return d, nil
	}
	if mode == "uring" {
		f.close()
		return nil, fmt.Errorf("open %s with io_uring: %w", path, err)
	}
	why := fmt.Sprintf("io_uring unavailable: %v", err)
	if opts.Logf != nil {
		opts.Logf("tfsmount: %s: using the sync I/O backend: %s", path, why)
	}
	return newSyncDev(f, opts.Queue, depthOr(opts.Depth, 32), why), nil
}

func depthOr(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// Describe says which backend serves d and why, for logs and -o debug.
func Describe(d Device) string {
	if x, ok := d.(interface{ describe() string }); ok {
		return x.describe()
	}
	return fmt.Sprintf("%T", d)
}
