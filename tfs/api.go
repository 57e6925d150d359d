// Package tfs owns the filesystem: the TFS on-disk format of the Nanos
// unikernel (value codec, dictionary, log), the metadata model (directories,
// files, extents, symlinks, hard links, xattrs, times), block allocation,
// volume discovery in raw and partitioned images, mkfs and fsck.
//
// This file is the contract the FUSE layer and the CLI program against.
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
// Replay (log.go) ends a log at a torn tail, which other writers (Nanos
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

// MkfsOptions configure Mkfs.
type MkfsOptions struct {
	Label string   // at most 31 bytes
	UUID  [16]byte // zero: random
}

// Mkfs (mkfs.go) writes an empty TFS volume over the whole device:
//
//	func Mkfs(dev blockdev.Device, q *bh.Queue, opts MkfsOptions) error

// The FS type and its methods live in the other files of this package. The
// contract, which the FUSE layer (tfs/fusefs) and the CLI rely on:
//
//	func Mount(dev blockdev.Device, opts Options) (*FS, error)
//	    Finds the volume (raw, or MBR root/boot/offset), replays the log,
//	    derives free space. Read-only if opts.ReadOnly or dev.ReadOnly().
//	func (fs *FS) Close() error            // write back everything, flush log and device
//	func (fs *FS) Sync() error             // syncfs: data, then log, then device flush
//	func (fs *FS) Label() string
//	func (fs *FS) UUID() [16]byte
//	func (fs *FS) StatFS() StatFS
//	func (fs *FS) Root() *Node             // *Node is stable for the mount; hard links share one
//	func (fs *FS) Lookup(dir *Node, name string) (*Node, error)
//	func (fs *FS) ReadDir(dir *Node) ([]DirEntry, error)       // sorted by name
//	func (fs *FS) Getattr(n *Node) Attr
//	func (fs *FS) Create(dir *Node, name string, excl bool) (*Node, error) // !excl: open existing file
//	func (fs *FS) Mkdir(dir *Node, name string) (*Node, error)
//	func (fs *FS) Symlink(dir *Node, name, target string) (*Node, error)
//	func (fs *FS) Mksock(dir *Node, name string) (*Node, error)
//	func (fs *FS) Link(n, dir *Node, name string) error
//	func (fs *FS) Unlink(dir *Node, name string) error
//	func (fs *FS) Rmdir(dir *Node, name string) error
//	func (fs *FS) Rename(odir *Node, oname string, ndir *Node, nname string, flags RenameFlags) error
//	func (fs *FS) Readlink(n *Node) (string, error)
//	func (fs *FS) Open(n *Node)            // an open file keeps its data after unlink ...
//	func (fs *FS) Release(n *Node)         // ... until its last Release
//	func (fs *FS) Read(n *Node, p []byte, off int64) (int, error)   // short only at EOF
//	func (fs *FS) Write(n *Node, p []byte, off int64) (int, error)  // extends the file
//	func (fs *FS) Truncate(n *Node, size int64) error
//	func (fs *FS) Fallocate(n *Node, mode uint32, off, length int64) error
//	func (fs *FS) Seek(n *Node, off int64, whence int) (int64, error) // SEEK_DATA / SEEK_HOLE
//	func (fs *FS) SetTimes(n *Node, atime, mtime *time.Time) error   // nil: leave unchanged
//	func (fs *FS) SetFlags(n *Node, exec, readonly *bool) error       // regular files; nil: leave unchanged
//	func (fs *FS) GetXattr(n *Node, name string) ([]byte, error)      // ENODATA if absent
//	func (fs *FS) SetXattr(n *Node, name string, value []byte, flags int) error // XATTR_CREATE/REPLACE
//	func (fs *FS) ListXattr(n *Node) ([]string, error)
//	func (fs *FS) RemoveXattr(n *Node, name string) error
//	func (fs *FS) Fsync(n *Node, dataOnly bool) error // dataOnly (fdatasync): times stay in memory
//	func (fs *FS) Compact() error          // rebuild the log now
//	func Fsck(dev blockdev.Device, opts Options) (*FsckReport, error) // report lists every problem
//	func (fs *FS) Resolve(path string) (*Node, error) // absolute guest path, no symlink following
//	func (fs *FS) NodeByIno(ino uint64) (*Node, error) // for file handles (ino.go)
//	func (fs *FS) Parent(dir *Node) (*Node, string, error)
//
// Also available (added with the implementation):
//
//	func (fs *FS) LogBlocks() uint64        // blocks held by the log chain (to show what Compact saves)
//	func (fs *FS) CacheStats() pagecache.Stats // the data cache's counters
//	type FsckReport                         // Problems []FsckProblem{Where, What}, counts, Clean(), String()
//
// Fsync(n) writes n's data, then the log (with every staged record), then
// flushes the device; Sync and Fsync of a directory write all data first.
