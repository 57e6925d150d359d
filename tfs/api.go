// Package tfs is the filesystem model over a TFS volume: directories,
// files and their extents, symlinks, hard links, xattrs and times built from
// the log that package tfs/format reads; block allocation; the log writer
// with its crash-ordering rules; compaction and fsck. What Nanos writes, byte
// for byte, is tfs/format's business; how tfsmount keeps it is this one's.
//
// This file holds the types the FUSE layer and the CLI program against.
// Every FS method is safe for concurrent use. Errors that a caller should
// turn into an errno wrap a syscall.Errno (errors.As finds it): ENOENT,
// EEXIST, ENOTDIR, EISDIR, ENOTEMPTY, ENAMETOOLONG, EINVAL, EPERM, ENOSPC,
// EROFS, ENODATA, ERANGE, EOPNOTSUPP, EIO. Errors about an inconsistent
// image wrap ErrCorrupt instead (errors.go has the table).
//
// # Crash safety
//
// A device may keep completed writes in a volatile cache and put any subset
// of them on the medium, in any order, until a flush completes; only a FUA
// write is durable by itself, and only a 512-byte sector is never torn.
// Against that model the package keeps these rules. Each has a test that
// turns it off (orderRules in ordering.go) and shows the crash simulator
// (crashsim_test.go) finding the damage, and TestCrashSim checks them all
// on random workloads:
//
//  1. A log write becomes part of the log through one block: the block that
//     holds the log's old END_OF_LOG. Every other block of the write (the
//     rest of the extension, new extensions with their headers, the links
//     to them) is written and flushed first; the publishing block is then
//     written with FUA. So an extension is durable before any link to it,
//     and a crash leaves either the old log or all of the write. A
//     compaction is the same with block 0 publishing: the new chain, a
//     flush, block 0 with FUA. (logBatch.blocks, commitBlocks;
//     TestOrderingRules/publishLast)
//  2. File data is durable before any log record that points at it: a log
//     write carrying records that CommitWrite staged (new extents, cleared
//     uninited flags) flushes before publishing, and so does every fsync. A
//     file never shows blocks it did not write: after a crash its bytes are
//     its own or zeros. (TestOrderingRules/dataFirst)
//  3. Blocks freed by a record (unlink, truncate, punch hole, the release of
//     a file unlinked while open) go back to the allocator only once that
//     record is durable (freeAfterCommit, releaseFreed), so no other file is
//     given them before the old owner has let go on the disk too. An
//     allocation short of space writes the log to get them back.
//     (TestOrderingRules/freeAfterCommit)
//  4. fsync, fdatasync and syncfs return only after the file's data (all
//     data, for syncfs), every record staged before them and a flush have
//     completed. (the promises TestCrashSim checks)
//
// Replay (tfs/format, log.go) ends a log at a torn tail, which other writers (Nanos
// itself, tfsmount before these rules) can leave, only where it provably is
// one: a link to an extension that has no header, or a last extension whose
// blocks from the failing record on are zeros. Anything else is an error
// that fsck --repair (Repair) fixes by ending the log before the first
// record it cannot read. (TestTornTails)
package tfs

import (
	"time"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/heap"
)

// Kind is the type of a node.
type Kind uint8

const (
	KindFile Kind = iota
	KindDir
	KindSymlink
	KindSocket
)

// Attr is what stat shows of a node. TFS stores no owner or mode: the FUSE
// layer synthesises them from the mount options, Exec and ReadOnly.
type Attr struct {
	Ino      uint64 // inode number, stable across mounts until a compaction; the root is 1 (ino.go)
	Gen      uint32 // generation: differs for another node once given the same Ino
	Kind     Kind
	Size     int64 // bytes; for a symlink the target length
	Blocks   int64 // 512-byte blocks allocated
	Nlink    uint32
	Atime    time.Time
	Mtime    time.Time
	Exec     bool // the node carries the exec flag
	ReadOnly bool // the node carries the readonly flag
}

// DirEntry is one entry of a directory.
type DirEntry struct {
	Name string
	Kind Kind
	Ino  uint64
	Node *Node
}

// StatFS describes space on the volume.
type StatFS struct {
	BlockSize uint32 // always 512
	Blocks    uint64 // blocks in the volume
	Free      uint64 // blocks free for file data (log reserve excluded)
	NameMax   uint32 // 255
}

// RenameFlags are renameat2 flags.
type RenameFlags uint32

const (
	RenameNoReplace RenameFlags = 1 << 0 // RENAME_NOREPLACE
	RenameExchange  RenameFlags = 1 << 1 // RENAME_EXCHANGE
	RenameWhiteout  RenameFlags = 1 << 2 // RENAME_WHITEOUT (refused with EINVAL)
)

// Fallocate modes (the Linux values).
const (
	FallocKeepSize  = 0x01
	FallocPunchHole = 0x02
	FallocZeroRange = 0x10
)

// MaxFileSize is the largest file size, and the largest end of a byte range
// (write, truncate, fallocate, seek), that tfs accepts; the FUSE layer
// refuses larger offsets before they become int64s. A filelength or extent
// in an image beyond it is malformed.
const MaxFileSize = 1 << 62

// Options configure Mount.
type Options struct {
	ReadOnly bool
	// Partition selects the volume in a partitioned image: "" or "root"
	// (default), "boot", or a decimal byte offset into the device.
	Partition string
	// CacheSize is the pagecache budget in bytes (0:
	// pagecache.DefaultBudget).
	CacheSize int64
	// Pool supplies page buffers (nil: one sized from CacheSize).
	Pool *heap.PagePool
	// Queue is the bhqueue that device completions arrive on.
	Queue *bh.Queue
	// WritebackDelay is how long dirty data and metadata may wait before
	// being written (0: pagecache.DefaultWritebackDelay).
	WritebackDelay time.Duration
	// Logf receives errors found in the background (failed write-backs
	// and reads of the data cache), rate-limited. nil: not logged.
	Logf func(format string, args ...any)
}
