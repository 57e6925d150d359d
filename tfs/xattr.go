package tfs

import (
	"fmt"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/tfsmount/tfsmount/tfs/format"
)

// Extended attributes and explicit times (docs/format.md,
// "Extended attributes" and "Times"). An xattr is a string attribute of the
// node tuple whose name has an interior dot; built-in attributes never have
// one.

const (
	xattrCreate  = 1 // XATTR_CREATE
	xattrReplace = 2 // XATTR_REPLACE
)

func isXattrName(name string) bool {
	i := strings.IndexByte(name, '.')
	return i > 0 && i < len(name)-1
}

// checkXattrName accepts the namespaces a TFS string attribute can hold:
// user.*, and trusted.* and security.*, whose access the kernel controls.
func checkXattrName(name string) error {
	ns, _, _ := strings.Cut(name, ".")
	if (ns != "user" && ns != "trusted" && ns != "security") || !isXattrName(name) || len(name) > 255 {
		return errnoErr(fmt.Sprintf("xattr name %q: only user.*, trusted.* and security.* are supported", name), syscall.EOPNOTSUPP)
	}
	return nil
}

// GetXattr returns the value of an xattr; ENODATA if absent.
func (fs *FS) GetXattr(n *Node, name string) ([]byte, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if !isXattrName(name) {
		return nil, errnoErr(fmt.Sprintf("xattr %q", name), syscall.ENODATA)
	}
	s, ok := format.TextOf(n.t.Attrs[name])
	if !ok {
		return nil, errnoErr(fmt.Sprintf("xattr %q", name), syscall.ENODATA)
	}
	return []byte(s), nil
}

// SetXattr stores an xattr as a string attribute (an EAV record).
func (fs *FS) SetXattr(n *Node, name string, value []byte, flags int) error {
	if err := checkXattrName(name); err != nil {
		return err
	}
	if flags&^(xattrCreate|xattrReplace) != 0 || flags == xattrCreate|xattrReplace {
		return errnoErr("xattr flags", syscall.EINVAL)
	}
	if err := checkUnsealed(n, "setxattr"); err != nil {
		return err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.checkWritable(); err != nil {
		return err
	}
	_, has := n.t.Attrs[name]
	if flags&xattrCreate != 0 && has {
		return errnoErr(fmt.Sprintf("xattr %q", name), syscall.EEXIST)
	}
	if flags&xattrReplace != 0 && !has {
		return errnoErr(fmt.Sprintf("xattr %q", name), syscall.ENODATA)
	}
	return fs.logEAV(n.t, name, format.StrOf(string(value)), false)
}

// ListXattr lists the attributes whose name has an interior dot.
func (fs *FS) ListXattr(n *Node) ([]string, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var out []string
	for name, v := range n.t.Attrs {
		if _, ok := v.(format.Bytes); ok && isXattrName(name) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// RemoveXattr removes an xattr with an EAV removal record.
func (fs *FS) RemoveXattr(n *Node, name string) error {
	if err := checkXattrName(name); err != nil {
		return err
	}
	if err := checkUnsealed(n, "removexattr"); err != nil {
		return err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.checkWritable(); err != nil {
		return err
	}
	if _, ok := n.t.Attrs[name]; !ok {
		return errnoErr(fmt.Sprintf("xattr %q", name), syscall.ENODATA)
	}
	return fs.logEAV(n.t, name, nil, false)
}

// SetTimes sets atime and/or mtime (nil leaves one unchanged). The values
// are logged at the next flush, unlike Nanos, which keeps them in memory.
func (fs *FS) SetTimes(n *Node, atime, mtime *time.Time) error {
	if err := checkUnsealed(n, "set times"); err != nil {
		return err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.checkWritable(); err != nil {
		return err
	}
	if atime != nil {
		n.t.Attrs["atime"] = format.IntOf(format.Timestamp(*atime))
	}
	if mtime != nil {
		n.t.Attrs["mtime"] = format.IntOf(format.Timestamp(*mtime))
	}
	if n.links > 0 || n == fs.root {
		n.timesDirty = true
		fs.dirty[n] = true
	}
	return nil
}
