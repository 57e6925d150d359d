package tfs

import (
	"syscall"

	"github.com/tfsmount/tfsmount/tfs/format"
)

// The errors tfs returns, and the errno each reaches the kernel as. The
// mapping itself is tfs/fusefs/errors.go (errnoOf), which says why for
// each sentinel.
//
//	error                  errno   when
//	---------------------  ------  -----------------------------------------
//	wrapped syscall.Errno  itself  what POSIX has a name for: ENOENT,
//	                               EEXIST, ENOSPC, EROFS... (api.go)
//	format.ErrCorrupt      EIO     the image contradicts itself or the
//	                               format: a corrupt or hostile image
//	                               (logged; fsck --repair fixes it)
//	heap.ErrNoMemory       EIO     the page cache found no buffer even
//	                               after writing back and evicting (logged)
//	anything else          EIO     a device error, or another unexpected
//	                               failure (logged)

// fsError carries a message for people and, for the FUSE layer, the errno
// or sentinel above that says what it is (errors.As / errors.Is find it).
type fsError struct {
	msg string
	err error // a syscall.Errno or format.ErrCorrupt
}

func (e *fsError) Error() string { return e.msg + ": " + e.err.Error() }
func (e *fsError) Unwrap() error { return e.err }

func errnoErr(msg string, errno syscall.Errno) error { return &fsError{msg, errno} }

// corruptErr reports an inconsistency found in the image.
func corruptErr(msg string) error { return &fsError{msg, format.ErrCorrupt} }
