// Package heap owns the two memory-like resources of the stack: the locked
// page-buffer heap (PagePool: 4 KiB page-aligned buffers carved from mmap'd
// slabs, shared by the io_uring reaper and the FUSE threads, with a budget
// and an injectable allocation failure) and the disk-block range allocator
// (Ranges: a map of free extents with first-fit allocation, used by tfs).
package heap
