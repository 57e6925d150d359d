// Package tfs owns the filesystem: the TFS on-disk format of the Nanos
// unikernel (value codec, dictionary, log), the metadata model (directories,
// files, extents, symlinks, hard links, xattrs, times), block allocation,
// volume discovery in raw and partitioned images, mkfs and fsck.
//
// This file is the contract the FUSE layer and the CLI program against.
// Every FS method is safe for concurrent use. Errors that a caller should
// turn into an errno wrap a syscall.Errno (errors.As finds it): ENOENT,
// EEXIST, ENOTDIR, EISDIR, ENOTEMPTY, ENAMETOOLONG, EINVAL, EPERM, ENOSPC,
// EROFS, ENODATA, ERANGE, EOPNOTSUPP, EIO.
package tfs

import (
	"syscall"
	"time"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
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
	Ino      uint64 // per-mount inode number; the root is 1
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
)

// Options configure Mount.
type Options struct {
	ReadOnly bool
	// Partition selects the volume in a partitioned image: "" or "root"
	// (default), "boot", or a decimal byte offset into the device.
	Partition string
	// CacheSize is the pagecache budget in bytes (0: a default).
	CacheSize int64
	// Pool supplies page buffers (nil: one sized from CacheSize).
	Pool *heap.PagePool
	// Queue is the bhqueue that device completions arrive on.
	Queue *bh.Queue
	// WritebackDelay is how long dirty data and metadata may wait before
	// being written (0: a default of a few seconds).
	WritebackDelay time.Duration
}

// MkfsOptions configure Mkfs.
type MkfsOptions struct {
	Label string   // at most 31 bytes
	UUID  [16]byte // zero: random
}

// Mkfs writes an empty TFS volume over the whole device.
func Mkfs(dev blockdev.Device, q *bh.Queue, opts MkfsOptions) error {
	return syscall.ENOSYS
}
