package fusefs

import (
	"errors"
	"syscall"
)

// toErrno maps an error from tfs to the errno the kernel gets. tfs wraps
// a syscall.Errno in every error a caller should see as such; anything
// else (an I/O failure without an errno, a corruption report) becomes EIO
// and is logged with the operation it came from, because the caller will
// only ever see "Input/output error".
func (m *mount) toErrno(op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if errno == syscall.EIO {
			m.logf("%s: %v", op, err)
		}
		return errno
	}
	m.logf("%s: %v (reported as EIO)", op, err)
	return syscall.EIO
}
