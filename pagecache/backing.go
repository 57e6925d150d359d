// Package pagecache owns cached file data: 4 KiB pages of each file held in
// buffers from the page heap, filled from and written back to a
// blockdev.Device, with read merging and read-ahead, read-modify-write of
// partial pages, dirty tracking, write-back on a timer, on sync and under
// memory pressure, and eviction under a memory budget. It follows Nanos's
// pagecache, with the page states and buffer ownership described in
// docs/architecture.md, "The page-buffer heap" and "Page states".
//
// The filesystem (tfs) tells the cache where a file's bytes live through the
// Backing interface; the cache never interprets the on-disk format.
package pagecache

// Segment maps a run of file bytes onto the device.
type Segment struct {
	Off int64 // file byte offset
	Len int64 // length in bytes
	Dev int64 // device byte offset of Off, or Hole
}

// Hole marks a segment with no initialised data on the device (a hole, an
// uninitialised extent, or bytes past the end of the file): it reads as
// zeros and needs no I/O.
const Hole = -1

// Backing is what the filesystem provides for each cached file.
//
// Data ordering: blocks are allocated at write-back (PrepareWrite), data is
// written to them, and only then (CommitWrite) may the filesystem log the
// records that make the blocks part of the file. A crash in between loses
// the new data but never exposes stale blocks.
//
// Backing methods are called from FUSE threads and from write-back, never
// with a pagecache state lock held, and never from a bh worker in a way that
// waits for I/O: they may take the filesystem's metadata mutex.
type Backing interface {
	// Map describes [off, off+n) for reading: segments in file order that
	// cover the range exactly, with Dev == Hole where there is no data.
	Map(off, n int64) ([]Segment, error)

	// Reserve is called by Write before it accepts new bytes for
	// [off, off+n): the filesystem sets aside room for any blocks that are
	// not allocated yet and returns an error wrapping syscall.ENOSPC if it
	// cannot. Reserving an already reserved or allocated range is free.
	Reserve(off, n int64) error

	// PrepareWrite is called at write-back for dirty bytes [off, off+n):
	// it allocates (from the reservation) whatever is not allocated and
	// returns where every byte goes; no segment is a Hole.
	PrepareWrite(off, n int64) ([]Segment, error)

	// CommitWrite reports the outcome of writing the range of an earlier
	// PrepareWrite. On success the filesystem may now log the new extents
	// (and clear uninited flags); on error it keeps them unlogged and the
	// pages stay dirty.
	CommitWrite(off, n int64, err error)
}
