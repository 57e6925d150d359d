package blockdev

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// imageFile is an opened image (regular file or block device) shared by the
// sync and io_uring backends: its descriptors, geometry and the alignment
// that decides, per request, between the O_DIRECT and the buffered
// descriptor.
//
// Invariant: fd is always valid (buffered); dfd is -1 or an O_DIRECT
// descriptor of the same file, and then memAlign and offAlign are non-zero
// powers of two.
type imageFile struct {
	path      string
	fd        int // buffered descriptor; holds the flock
	dfd       int // O_DIRECT descriptor, or -1
	memAlign  int // O_DIRECT buffer address alignment
	offAlign  int // O_DIRECT offset and length alignment
	size      int64
	sector    int
	readOnly  bool
	blockDev  bool
	directWhy string // why O_DIRECT is or is not used, for Describe
}

// ErrLocked is matched (errors.Is) by the error of an Open that found the
// image locked by another user; so is EWOULDBLOCK.
var ErrLocked = errors.New("image is locked by another user")

type lockedError struct{ path string }

func (e *lockedError) Error() string {
	return fmt.Sprintf("image %s is already in use by another tfsmount (locked)", e.path)
}

func (e *lockedError) Unwrap() []error { return []error{ErrLocked, unix.EWOULDBLOCK} }

// openImage opens path, takes the image lock and works out geometry and
// O_DIRECT alignment. buffered forbids O_DIRECT.
func openImage(path string, readOnly, buffered bool) (*imageFile, error) {
	flags := unix.O_CLOEXEC
	if readOnly {
		flags |= unix.O_RDONLY
	} else {
		flags |= unix.O_RDWR
	}
	fd, err := unix.Open(path, flags, 0)
	if err != nil {
		if !readOnly && (err == unix.EROFS || err == unix.EACCES) {
			return nil, fmt.Errorf("open image %s read-write: %w (try read-only)", path, err)
		}
		return nil, fmt.Errorf("open image %s: %w", path, err)
	}
	f := &imageFile{path: path, fd: fd, dfd: -1, readOnly: readOnly}
	if err := f.setup(buffered); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

func (f *imageFile) setup(buffered bool) error {
	// A shared lock for read-only opens lets several read-only users share
	// an image while any writer excludes everyone else.
	how := unix.LOCK_EX
	if f.readOnly {
		how = unix.LOCK_SH
	}
	if err := unix.Flock(f.fd, how|unix.LOCK_NB); err != nil {
		if err == unix.EWOULDBLOCK {
			return &lockedError{path: f.path}
		}
		return fmt.Errorf("lock image %s: %w", f.path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return fmt.Errorf("stat image %s: %w", f.path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		f.size = st.Size
		f.sector = 512
	case unix.S_IFBLK:
		f.blockDev = true
		size, err := unix.IoctlGetUint64(f.fd, unix.BLKGETSIZE64)
		if err != nil {
			return fmt.Errorf("size of block device %s (BLKGETSIZE64): %w", f.path, err)
		}
		f.size = int64(size)
		ss, err := unix.IoctlGetInt(f.fd, unix.BLKSSZGET)
		if err != nil {
			return fmt.Errorf("sector size of block device %s (BLKSSZGET): %w", f.path, err)
		}
		f.sector = ss
	default:
		return fmt.Errorf("image %s is neither a regular file nor a block device (mode %#o)", f.path, st.Mode)
	}
	if buffered {
		f.directWhy = "buffered I/O requested"
		return nil
	}
	f.openDirect()
	return nil
}

// openDirect opens the O_DIRECT twin descriptor when the file system allows
// it and reports a usable alignment; failure is not an error, only a reason.
func (f *imageFile) openDirect() {
	memAlign, offAlign := 0, 0
	var sx unix.Statx_t
	if err := unix.Statx(f.fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &sx); err == nil && sx.Mask&unix.STATX_DIOALIGN != 0 {
		memAlign, offAlign = int(sx.Dio_mem_align), int(sx.Dio_offset_align)
		if memAlign == 0 || offAlign == 0 {
			f.directWhy = "file system does not support O_DIRECT (statx DIOALIGN is zero)"
			return
		}
	} else if f.blockDev {
		memAlign, offAlign = f.sector, f.sector
	} else {
		f.directWhy = "O_DIRECT alignment unknown (no statx DIOALIGN)"
		return
	}
	if !pow2(memAlign) || !pow2(offAlign) || offAlign > 4096 || memAlign > 4096 {
		f.directWhy = fmt.Sprintf("O_DIRECT alignment %d/%d does not fit page buffers", memAlign, offAlign)
		return
	}
	flags := unix.O_CLOEXEC | unix.O_DIRECT
	if f.readOnly {
		flags |= unix.O_RDONLY
	} else {
		flags |= unix.O_RDWR
	}
	// Reopen through /proc so that a renamed or replaced path cannot give
	// us a different file than the one we locked.
	dfd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", f.fd), flags, 0)
	if err != nil {
		f.directWhy = fmt.Sprintf("O_DIRECT refused (%v)", err)
		return
	}
	f.dfd, f.memAlign, f.offAlign = dfd, memAlign, offAlign
	f.directWhy = fmt.Sprintf("O_DIRECT for requests aligned to %d bytes (memory %d), buffered otherwise", offAlign, memAlign)
}

func pow2(n int) bool { return n > 0 && n&(n-1) == 0 }

// fdFor picks the descriptor for a read or write: O_DIRECT when offset,
// every length and every buffer address fit the alignment, else buffered.
func (f *imageFile) fdFor(off int64, bufs [][]byte) int {
	if f.dfd < 0 || off&int64(f.offAlign-1) != 0 {
		return f.fd
	}
	for _, b := range bufs {
		if len(b)&(f.offAlign-1) != 0 {
			return f.fd
		}
		if len(b) > 0 && uintptr(unsafe.Pointer(&b[0]))&uintptr(f.memAlign-1) != 0 {
			return f.fd
		}
	}
	return f.dfd
}

// discardRange trims [off, off+n) inward to whole sectors, as block devices
// require; ok is false when nothing is left.
func (f *imageFile) discardRange(off, n int64) (int64, int64, bool) {
	s := int64(f.sector)
	start := (off + s - 1) / s * s
	end := (off + n) / s * s
	if end <= start {
		return 0, 0, false
	}
	return start, end - start, true
}

func (f *imageFile) close() error {
	var errs []error
	if f.dfd >= 0 {
		errs = append(errs, unix.Close(f.dfd))
		f.dfd = -1
	}
	if f.fd >= 0 {
		errs = append(errs, unix.Close(f.fd))
		f.fd = -1
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close image %s: %w", f.path, err)
	}
	return nil
}

func (f *imageFile) kind() string {
	if f.blockDev {
		return "block device"
	}
	return "file"
}

// errnoErr turns a kernel result into an error that names the path.
func (f *imageFile) opError(op Op, off int64, err error) error {
	return &os.PathError{Op: fmt.Sprintf("%s at %d", op, off), Path: f.path, Err: err}
}

// ioctlPtr issues an ioctl whose argument points at a small Go value.
func ioctlPtr[T any](fd int, req uint, arg *T) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(arg)))
	if e != 0 {
		return e
	}
	return nil
}
