// Package heap owns the two memory-like resources of the stack: the locked
// page-buffer heap (PagePool: 4 KiB page-aligned buffers carved from mmap'd
// slabs, with a budget and an injectable allocation failure) and the
// disk-block range allocator (Ranges: a map of free extents with first-fit
// allocation, used by tfs).
//
// The pool's users: FUSE threads allocate and fill buffers (through
// pagecache), write-back hands them to the device, bh workers free the
// buffers of dropped pages, and the kernel reads and writes them through
// io_uring's registered buffers. The io_uring reaper never calls it.
package heap
