package fusefs

import (
	"errors"
	"syscall"

	"github.com/tfsmount/tfsmount/heap"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// errnoOf is the one mapping from an error of tfs (tfs/errors.go has the
// table) to the errno the kernel gets. The sentinels come first, so an
// error that wraps one and an errno as well gets the sentinel's:
//
//   - format.ErrCorrupt → EIO. The image contradicts itself: nothing the
//     caller did caused it and retrying will not help. EUCLEAN ("Structure
//     needs cleaning"), what ext4 and XFS return for corruption, would say
//     more, but a corrupt TFS image has always given EIO here; the daemon
//     log says what is broken, and fsck --repair fixes it.
//   - heap.ErrNoMemory → EIO. A request gets it only after the page cache
//     failed to make room: dirty pages it could not write back (mostly a
//     failing device, so the cause is I/O) or a page heap the OS would not
//     grow. ENOMEM would tell the caller the host is out of memory, which
//     in the first case it is not, and with writeback_cache the kernel
//     turns failed write-backs into EIO whatever we answer.
//   - a wrapped syscall.Errno → itself.
//   - anything else (a device error without an errno...) → EIO.
func errnoOf(err error) syscall.Errno {
	var errno syscall.Errno
	switch {
	case errors.Is(err, format.ErrCorrupt), errors.Is(err, heap.ErrNoMemory):
		return syscall.EIO
	case errors.As(err, &errno):
		return errno
	}
	return syscall.EIO
}

// toErrno maps err (nil: 0) with errnoOf. Every EIO is logged with the
// operation it came from, because the caller will only ever see
// "Input/output error".
func (m *mount) toErrno(op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	errno := errnoOf(err)
	switch {
	case errno != syscall.EIO:
	case errors.Is(err, syscall.EIO):
		m.logf("%s: %v", op, err)
	default:
		m.logf("%s: %v (reported as EIO)", op, err)
	}
	return errno
}
