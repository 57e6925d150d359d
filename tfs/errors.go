package tfs

import "syscall"

// fsError carries a message for people and an errno for the FUSE layer
// (errors.As / errors.Is find the syscall.Errno).
type fsError struct {
	msg   string
	errno syscall.Errno
}

func (e *fsError) Error() string { return e.msg + ": " + e.errno.Error() }
func (e *fsError) Unwrap() error { return e.errno }

func errnoErr(msg string, errno syscall.Errno) error { return &fsError{msg, errno} }
