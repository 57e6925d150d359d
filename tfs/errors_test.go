package tfs

import (
	"errors"
	"syscall"
	"testing"

	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/format"
	"github.com/tfsmount/tfsmount/tfs/format/formattest"
)

// Inconsistencies found in the image wrap format.ErrCorrupt and no errno, so the
// FUSE layer maps them by the sentinel.
func TestErrCorrupt(t *testing.T) {
	err := corruptErr("directory without children")
	var errno syscall.Errno
	if !errors.Is(err, format.ErrCorrupt) || errors.As(err, &errno) || err.Error() != "directory without children: corrupt image" {
		t.Errorf("corruptErr: %q (errno %v)", err, errno)
	}
	q := testQueue(t)
	noRoot := image(1024, 1024, formattest.Record([]byte{0x90}), []byte{format.RecEndOfLog})
	if _, err := Mount(blockdev.NewMemoryFrom(q, noRoot, true), Options{Queue: q}); !errors.Is(err, format.ErrCorrupt) {
		t.Errorf("mount of a log without a root: %v; want format.ErrCorrupt", err)
	}
	badEntry := entryImage(nil, formattest.Record([]byte{0x11, 0x03, 0x81, 'n', 0xc1, '7'}))
	if _, err := Mount(blockdev.NewMemoryFrom(q, badEntry, false), Options{Queue: q}); !errors.Is(err, format.ErrCorrupt) {
		t.Errorf("writable mount of a volume with a malformed entry: %v; want format.ErrCorrupt", err)
	}
}
