package fusefs

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/tfsmount/tfsmount/heap"
	"github.com/tfsmount/tfsmount/pagecache"
	"github.com/tfsmount/tfsmount/tfs/format"
)

func TestToErrno(t *testing.T) {
	var logged []string
	m := &mount{cfg: Config{Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }},
		limit: pagecache.LogLimiter{Burst: logBurst}}
	cases := []struct {
		err  error
		want syscall.Errno
		logs bool
	}{
		{nil, 0, false},
		{syscall.ENOENT, syscall.ENOENT, false},
		{fmt.Errorf("lookup %q in dir 7: %w", "x", syscall.ENOTDIR), syscall.ENOTDIR, false},
		{fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", syscall.ENOSPC)), syscall.ENOSPC, false},
		{errors.New("extent 3 of node 9 ends past the volume"), syscall.EIO, true},
		{fmt.Errorf("read block 12: %w", syscall.EIO), syscall.EIO, true},
		// The sentinels (errnoOf says why each is EIO).
		{fmt.Errorf("readdir of inode 7: directory without children: %w", format.ErrCorrupt), syscall.EIO, true},
		{fmt.Errorf("write file bytes [0,4096): %w", heap.ErrNoMemory), syscall.EIO, true},
		// A sentinel wins over an errno wrapped with it.
		{fmt.Errorf("%w: %w", syscall.ENOENT, format.ErrCorrupt), syscall.EIO, true},
	}
	for _, c := range cases {
		logged = nil
		if got := m.toErrno("op", c.err); got != c.want {
			t.Errorf("toErrno(%v) = %v, want %v", c.err, got, c.want)
		}
		if (len(logged) > 0) != c.logs {
			t.Errorf("toErrno(%v) logged %q, want logging %v", c.err, logged, c.logs)
		}
	}
	if m.errors.Load() != 5 {
		t.Errorf("error counter %d, want 5", m.errors.Load())
	}
}
