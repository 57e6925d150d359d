package tfs

import (
	"errors"
	"syscall"
	"testing"

	"github.com/tfsmount/tfsmount/blockdev"
)

// Inconsistencies found in the image wrap ErrCorrupt and no errno, so the
// FUSE layer maps them by the sentinel.
func TestErrCorrupt(t *testing.T) {
	err := corruptErr("directory without children")
	var errno syscall.Errno
	if !errors.Is(err, ErrCorrupt) || errors.As(err, &errno) || err.Error() != "directory without children: corrupt image" {
		t.Errorf("corruptErr: %q (errno %v)", err, errno)
	}
	q := testQueue(t)
	noRoot := image(1024, 1024, record([]byte{0x90}), []byte{recEndOfLog})
	if _, err := Mount(blockdev.NewMemoryFrom(q, noRoot, true), Options{Queue: q}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("mount of a log without a root: %v; want ErrCorrupt", err)
	}
	badEntry := entryImage(nil, record([]byte{0x11, 0x03, 0x81, 'n', 0xc1, '7'}))
	if _, err := Mount(blockdev.NewMemoryFrom(q, badEntry, false), Options{Queue: q}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("writable mount of a volume with a malformed entry: %v; want ErrCorrupt", err)
	}
}
