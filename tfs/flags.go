package tfs

import (
	"fmt"
	"syscall"

	"github.com/tfsmount/tfsmount/tfs/format"
)

// Per-file flags (docs/format.md, "Flags"): exec and readonly are presence
// flags on a regular file's tuple. They are the only part of a chmod that
// TFS can store. A set flag is written as the null marker, the value Nanos
// uses for its own flag attributes; a cleared flag is an EAV removal record,
// so the change is byte-compatible with Nanos' log.

// SetFlags sets or clears the exec and readonly flags of a regular file
// (nil leaves a flag unchanged). A flag already in the asked state logs
// nothing.
func (fs *FS) SetFlags(n *Node, exec, readonly *bool) error {
	if n.kind != KindFile {
		return errnoErr("exec and readonly flags exist only on regular files", syscall.EPERM)
	}
	if err := checkUnsealed(n, "chmod"); err != nil {
		return err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.checkWritable(); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		want *bool
	}{{"exec", exec}, {"readonly", readonly}} {
		if f.want == nil {
			continue
		}
		_, has := n.t.Attrs[f.name]
		if has == *f.want {
			continue
		}
		var v format.Value
		if *f.want {
			v = format.NullMarker
		}
		if err := fs.logEAV(n.t, f.name, v, false); err != nil {
			return fmt.Errorf("set flag %s: %w", f.name, err)
		}
	}
	return nil
}
