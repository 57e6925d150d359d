package fusefs

import (
	"context"
	"errors"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tfsmount/tfsmount/tfs"
)

// handle is one open file description. It carries no file state (every
// request names the node, and the kernel applies O_APPEND and O_DIRECT),
// but go-fuse sends RELEASE only for opens that returned a handle.
type handle struct {
	// counted: the open took a tfs open reference, which Release gives
	// back. With Config.NoOpen none is taken (noopen.go), so a RELEASE
	// the kernel may or may not send for a CREATE cannot give back a
	// reference that something else holds.
	counted bool
}

// openFlags is the kernel caching of every handle: the page cache is kept
// from earlier opens (FOPEN_KEEP_CACHE), because every change to file data
// goes through this mount and the kernel invalidates its own cache for
// truncate, punch hole and copy_file_range.
//
// O_DIRECT handles get the same reply on purpose: the kernel then serves
// them with its own direct I/O path, which bypasses the page cache for
// that handle yet writes back and invalidates cached pages around each
// direct request, so other handles and shared mappings of the file stay
// coherent. FOPEN_DIRECT_IO would skip that coherence (and refuse mmap).
const openFlags = fuse.FOPEN_KEEP_CACHE

func wantsWrite(flags uint32) bool {
	return flags&syscall.O_ACCMODE == syscall.O_WRONLY || flags&syscall.O_ACCMODE == syscall.O_RDWR
}

var _ = (fs.NodeOpener)((*node)(nil))

// readOnlyDenies reports whether the caller may not write a file that TFS
// marks readonly. The flag is shown as missing write bits, so it is enforced
// the way a kernel filesystem enforces those: everyone but root (who has
// CAP_DAC_OVERRIDE on the host) is refused. A caller we cannot identify is
// refused, which is the safe side.
func readOnlyDenies(ctx context.Context, a tfs.Attr) bool {
	if !a.ReadOnly {
		return false
	}
	caller, ok := fuse.FromContext(ctx)
	return !ok || caller.Uid != 0
}

// Open refuses writing to files TFS marks readonly (see readOnlyDenies) and
// applies O_TRUNC, which arrives here (CAP_ATOMIC_O_TRUNC). O_APPEND needs
// nothing: the kernel sends writes at the end of the file.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	m := n.m
	if m.cfg.NoOpen {
		return nil, 0, syscall.ENOSYS // see noopen.go
	}
	a := m.fs.Getattr(n.tn)
	if a.Kind == tfs.KindSocket {
		return nil, 0, syscall.ENXIO
	}
	if wantsWrite(flags) && readOnlyDenies(ctx, a) {
		return nil, 0, syscall.EACCES
	}
	if flags&syscall.O_TRUNC != 0 && wantsWrite(flags) && a.Size != 0 {
		if err := m.fs.Truncate(n.tn, 0); err != nil {
			return nil, 0, m.toErrno("open O_TRUNC", err)
		}
	}
	m.fs.Open(n.tn)
	return &handle{counted: true}, openFlags, 0
}

var _ = (fs.NodeCreater)((*node)(nil))

// Create makes (or with O_EXCL unset, may open) a regular file. A new
// file gets the flags its mode asks for (modeFlags), so 'cp' of an
// executable makes an executable; an existing file keeps its own.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	m := n.m
	if errno := checkName(name); errno != 0 {
		return nil, nil, 0, errno
	}
	// Try to make it first, so a file this call did not make is known.
	tn, err := m.fs.Create(n.tn, name, true)
	made := err == nil
	if errors.Is(err, syscall.EEXIST) && flags&syscall.O_EXCL == 0 {
		tn, err = m.fs.Create(n.tn, name, false)
	}
	if err != nil {
		return nil, nil, 0, m.toErrno("create", err)
	}
	if made {
		if errno := m.setModeFlags(tn, mode); errno != 0 {
			return nil, nil, 0, errno
		}
	}
	if flags&syscall.O_TRUNC != 0 {
		if a := m.fs.Getattr(tn); a.Size != 0 {
			if readOnlyDenies(ctx, a) {
				return nil, nil, 0, syscall.EACCES
			}
			if err := m.fs.Truncate(tn, 0); err != nil {
				return nil, nil, 0, m.toErrno("create O_TRUNC", err)
			}
		}
	}
	h := &handle{counted: !m.cfg.NoOpen}
	if h.counted {
		m.fs.Open(tn)
	}
	return n.newChild(ctx, tn, out), h, openFlags, 0
}

var _ = (fs.NodeReleaser)((*node)(nil))

// Release ends a handle; the last release of an unlinked file frees its
// blocks (tfs keeps them until then).
func (n *node) Release(ctx context.Context, f fs.FileHandle) syscall.Errno {
	if h, ok := f.(*handle); ok && h.counted {
		n.m.fs.Release(n.tn)
	}
	return 0
}

var _ = (fs.NodeFlusher)((*node)(nil))

// Flush (each close) has nothing to do: data reaches the image by
// writeback within the tfs writeback delay, on fsync, and at unmount.
// Making close durable would cost a device flush per close, which Nanos
// does not do. ENOSYS tells the kernel so, and it sends no more FLUSH
// requests on this mount: one round trip less per close. (With the
// kernel's writeback cache, close still writes its dirty pages back first;
// the kernel does that before it would send FLUSH.)
func (n *node) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

var _ = (fs.NodeReader)((*node)(nil))

func (n *node) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	k, err := n.m.fs.Read(n.tn, dest, off)
	if off == 0 {
		// After the read, so that its own device read (when the file
		// was not prefetched) does not queue behind the next files'.
		n.prefetchAfter()
	}
	if err != nil && k == 0 {
		return nil, n.m.toErrno("read", err)
	}
	return readInPlace(dest[:k]), 0
}

// readInPlace is data read into the buffer go-fuse gave for it. Unlike
// fuse.ReadResultData it offers only Bytes, so that over io_uring, where
// that buffer is the ring entry's payload, go-fuse sees the data already
// in place and does not copy it onto itself (1 MiB per sequential read:
// cold sequential reads over the ring were at 0.85x of /dev/fuse with
// the copy).
type readInPlace []byte

func (r readInPlace) Bytes([]byte) ([]byte, fuse.Status) { return r, fuse.OK }
func (r readInPlace) Size() int                          { return len(r) }
func (r readInPlace) Done()                              {}

var _ = (fs.NodeWriter)((*node)(nil))

func (n *node) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	k, err := n.m.fs.Write(n.tn, data, off)
	if err != nil && k == 0 {
		return 0, n.m.toErrno("write", err)
	}
	return uint32(k), 0
}

var _ = (fs.NodeAllocater)((*node)(nil))

// Allocate serves the fallocate modes TFS has: 0, KEEP_SIZE,
// PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE (with or without KEEP_SIZE). Others
// (COLLAPSE, INSERT, UNSHARE, ...) are EOPNOTSUPP, which tools take as
// "not supported here".
func (n *node) Allocate(ctx context.Context, f fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	switch mode {
	case 0, tfs.FallocKeepSize, tfs.FallocPunchHole | tfs.FallocKeepSize,
		tfs.FallocZeroRange, tfs.FallocZeroRange | tfs.FallocKeepSize:
	default:
		return syscall.EOPNOTSUPP
	}
	if off > tfs.MaxFileSize || size > tfs.MaxFileSize {
		return syscall.EFBIG
	}
	if err := n.m.fs.Fallocate(n.tn, mode, int64(off), int64(size)); err != nil {
		return n.m.toErrno("fallocate", err)
	}
	n.m.touchCtime(n.tn)
	return 0
}

var _ = (fs.NodeLseeker)((*node)(nil))

// Lseek answers SEEK_DATA and SEEK_HOLE (the only whence values the kernel
// forwards) from the extent map. With the kernel's writeback cache the
// newest data may still be only in the kernel, which does not write it
// back before asking: ENOSYS makes the kernel answer for the whole mount
// from its own size, with no holes, which is always correct.
func (n *node) Lseek(ctx context.Context, f fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	if n.m.writeback {
		return 0, syscall.ENOSYS
	}
	if off > tfs.MaxFileSize {
		return 0, syscall.ENXIO
	}
	pos, err := n.m.fs.Seek(n.tn, int64(off), int(whence))
	if err != nil {
		return 0, n.m.toErrno("lseek", err)
	}
	return uint64(pos), 0
}

var _ = (fs.NodeCopyFileRanger)((*node)(nil))

// copyChunk bounds the buffer of one CopyFileRange step.
const copyChunk = 1 << 20

// CopyFileRange copies inside the daemon, sparing the caller two trips
// through the kernel. TFS has no shared extents, so the data is copied.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	if flags != 0 {
		return 0, syscall.EINVAL
	}
	dst, ok := out.Operations().(*node)
	if !ok {
		return 0, syscall.EXDEV
	}
	if offIn > tfs.MaxFileSize || offOut > tfs.MaxFileSize {
		return 0, syscall.EFBIG
	}
	// The reply counts bytes in 32 bits; the kernel asks again for the rest.
	length = min(length, 1<<30)
	buf := make([]byte, min(length, copyChunk))
	var done uint64
	for done < length {
		want := min(length-done, uint64(len(buf)))
		k, err := n.m.fs.Read(n.tn, buf[:want], int64(offIn+done))
		if err != nil && k == 0 {
			if done > 0 {
				break
			}
			return 0, n.m.toErrno("copy_file_range read", err)
		}
		if k == 0 {
			break
		}
		w, err := dst.m.fs.Write(dst.tn, buf[:k], int64(offOut+done))
		done += uint64(max(w, 0))
		if err != nil {
			if done > 0 {
				break
			}
			return 0, n.m.toErrno("copy_file_range write", err)
		}
		if k < int(want) {
			break
		}
	}
	return uint32(done), 0
}
