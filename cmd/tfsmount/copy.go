package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pkg/xattr"
	"github.com/tfsmount/tfsmount/tfs"
)

// copyBuf is the chunk size of file copies in and out of a volume.
const copyBuf = 1 << 20

// copyBufs recycles copy buffers: a tree of many small files would otherwise
// allocate, zero and garbage-collect a fresh megabyte per file, which made
// mkfs --from several times slower than cp -a.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBuf); return &b }}

// getCopyBuf returns a buffer from copyBufs; give it back with putCopyBuf.
func getCopyBuf() *[]byte { return copyBufs.Get().(*[]byte) }

func putCopyBuf(b *[]byte) { copyBufs.Put(b) }

// copyIn copies the host path src into directory dir of fsys under name,
// like cp -a: directories recursively, regular files, symlinks,
// modification times and user.* extended attributes. Host FIFOs, devices and sockets cannot be stored
// and are skipped with a warning. An existing regular file is overwritten;
// an existing directory is merged into.
func copyIn(fsys *tfs.FS, src string, dir *tfs.Node, name string, p *progress) error {
	st, err := os.Lstat(src)
	if err != nil {
		return err
	}
	mtime := st.ModTime()
	atime := mtime
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		atime = time.Unix(sys.Atim.Sec, sys.Atim.Nsec)
	}
	switch {
	case st.Mode().IsDir():
		n, err := fsys.Lookup(dir, name)
		if errors.Is(err, syscall.ENOENT) {
			n, err = fsys.Mkdir(dir, name)
		}
		if err != nil {
			return fmt.Errorf("mkdir %s: %w", name, err)
		}
		if fsys.Getattr(n).Kind != tfs.KindDir {
			return fmt.Errorf("%s: exists in the volume and is not a directory", src)
		}
		ents, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := copyIn(fsys, filepath.Join(src, e.Name()), n, e.Name(), p); err != nil {
				return err
			}
		}
		p.add(1, 0)
		if err := copyXattrsIn(fsys, src, n); err != nil {
			return err
		}
		// After the children: creating them changed the directory's mtime.
		return fsys.SetTimes(n, &atime, &mtime)
	case st.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if _, err := fsys.Lookup(dir, name); err == nil {
			if err := fsys.Unlink(dir, name); err != nil {
				return fmt.Errorf("replace %s: %w", src, err)
			}
		}
		n, err := fsys.Symlink(dir, name, target)
		if err != nil {
			return fmt.Errorf("symlink %s: %w", src, err)
		}
		p.add(1, 0)
		return fsys.SetTimes(n, &atime, &mtime)
	case st.Mode().IsRegular():
		n, err := fsys.Create(dir, name, false)
		if err != nil {
			return fmt.Errorf("create %s: %w", src, err)
		}
		if err := copyFileIn(fsys, src, n, p); err != nil {
			return fmt.Errorf("copy %s: %w", src, err)
		}
		p.add(1, 0)
		if err := copyXattrsIn(fsys, src, n); err != nil {
			return err
		}
		return fsys.SetTimes(n, &atime, &mtime)
	}
	fmt.Fprintf(os.Stderr, "tfsmount: skipping %s: TFS cannot hold a %v\n", src, st.Mode().Type())
	return nil
}

// copyXattrsIn copies the extended attributes of the host path src (not
// following a symlink) to n, replacing any n has of the same name: user.*,
// and trusted.* and security.* where the host lets us read them (as root),
// as rsync -X does. system.* (ACLs) cannot be stored: they come back from
// the mode.
func copyXattrsIn(fsys *tfs.FS, src string, n *tfs.Node) error {
	names, err := xattr.LList(src)
	if err != nil {
		if errors.Is(err, syscall.ENOTSUP) {
			return nil // the host filesystem has none
		}
		return fmt.Errorf("list extended attributes of %s: %w", src, err)
	}
	for _, name := range names {
		if strings.HasPrefix(name, "system.") {
			continue
		}
		v, err := xattr.LGet(src, name)
		if err != nil {
			return fmt.Errorf("read extended attribute %s of %s: %w", name, src, err)
		}
		if err := fsys.SetXattr(n, name, v, 0); err != nil {
			// As cp -a: an attribute that cannot be kept is reported,
			// and the copy goes on.
			fmt.Fprintf(os.Stderr, "tfsmount: %s: extended attribute %s not kept: %v\n", src, name, err)
		}
	}
	return nil
}

// copyXattrsOut sets the extended attributes of n on the host file f. One
// the host cannot take (a value too large for its filesystem, a namespace
// it refuses) is reported and skipped, as cp -a does.
func copyXattrsOut(fsys *tfs.FS, n *tfs.Node, f *os.File) error {
	names, err := fsys.ListXattr(n)
	if err != nil {
		return err
	}
	for _, name := range names {
		v, err := fsys.GetXattr(n, name)
		if err != nil {
			return fmt.Errorf("read extended attribute %s: %w", name, err)
		}
		if err := xattr.FSet(f, name, v); err != nil {
			fmt.Fprintf(os.Stderr, "tfsmount: %s: extended attribute %s not kept: %v\n", f.Name(), name, err)
		}
	}
	return nil
}

// copyFileIn replaces the contents of n with the host file src.
func copyFileIn(fsys *tfs.FS, src string, n *tfs.Node, p *progress) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fsys.Open(n)
	defer fsys.Release(n)
	if err := fsys.Truncate(n, 0); err != nil {
		return err
	}
	bp := getCopyBuf()
	defer putCopyBuf(bp)
	buf := *bp
	var off int64
	for {
		k, rerr := io.ReadFull(f, buf)
		if k > 0 {
			if _, err := fsys.Write(n, buf[:k], off); err != nil {
				return fmt.Errorf("write at %d: %w", off, err)
			}
			off += int64(k)
			p.add(0, int64(k))
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// copyOut copies node n of fsys to the host path dest, which must not
// exist (for a directory: may exist, then the tree is merged into it).
// Nothing is ever written outside dest: every name is created relative to
// its parent directory's descriptor, never through a symlink (those in the
// image are copied as symlinks and never followed; one in the destination
// where the image has a directory is an error, where it has a file it is
// replaced), and an existing file is replaced, not written through (it
// may be a hard link to a file elsewhere).
func copyOut(fsys *tfs.FS, n *tfs.Node, dest string, p *progress) error {
	if st, err := os.Stat(dest); err == nil && st.IsDir() && fsys.Getattr(n).Kind == tfs.KindDir {
		// DEST itself is the user's to choose, symlink or not: merge into
		// the directory it names.
		fd, err := unix.Open(dest, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", dest, err)
		}
		dir := os.NewFile(uintptr(fd), dest)
		defer dir.Close()
		if err := copyDirOut(fsys, n, fd, dest, p); err != nil {
			return err
		}
		if err := copyXattrsOut(fsys, n, dir); err != nil {
			return err
		}
		a := fsys.Getattr(n)
		return unix.UtimesNanoAt(fd, ".", []unix.Timespec{timespec(a.Atime), timespec(a.Mtime)}, 0)
	}
	dir, name := filepath.Split(filepath.Clean(dest))
	if dir == "" {
		dir = "."
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	return copyOutAt(fsys, n, fd, name, dest, p)
}

// copyOutAt copies n to name in the directory open as dirfd; shown is the
// host path, for messages.
func copyOutAt(fsys *tfs.FS, n *tfs.Node, dirfd int, name, shown string, p *progress) error {
	a := fsys.Getattr(n)
	switch a.Kind {
	case tfs.KindDir:
		if err := unix.Mkdirat(dirfd, name, 0o755); err != nil && err != unix.EEXIST {
			return fmt.Errorf("mkdir %s: %w", shown, err)
		}
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("%s exists and is not a directory (a symlink is not followed): %w", shown, err)
		}
		dir := os.NewFile(uintptr(fd), shown)
		err = copyDirOut(fsys, n, fd, shown, p)
		if err == nil {
			err = copyXattrsOut(fsys, n, dir)
		}
		dir.Close()
		if err != nil {
			return err
		}
		p.add(1, 0)
	case tfs.KindSymlink:
		target, err := fsys.Readlink(n)
		if err != nil {
			return fmt.Errorf("readlink for %s: %w", shown, err)
		}
		if err := replaceable(dirfd, name, shown); err != nil {
			return err
		}
		if err := unix.Symlinkat(target, dirfd, name); err != nil {
			return fmt.Errorf("symlink %s: %w", shown, err)
		}
		p.add(1, 0)
	case tfs.KindFile:
		mode := uint32(0o644)
		if a.Exec {
			mode = 0o755
		}
		if a.ReadOnly {
			mode &^= 0o222
		}
		if err := copyFileOut(fsys, n, dirfd, name, shown, mode, p); err != nil {
			return err
		}
		p.add(1, 0)
	default:
		fmt.Fprintf(os.Stderr, "tfsmount: skipping %s: a stale socket entry\n", shown)
		return nil
	}
	ts := []unix.Timespec{timespec(a.Atime), timespec(a.Mtime)}
	if err := unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", shown, err)
	}
	return nil
}

// copyDirOut copies the entries of directory n into the directory open as
// fd. The names come from the model, which never shows one with a '/' or
// "." or ".." (the builder skips them).
func copyDirOut(fsys *tfs.FS, n *tfs.Node, fd int, shown string, p *progress) error {
	ents, err := fsys.ReadDir(n)
	if err != nil {
		return fmt.Errorf("read directory for %s: %w", shown, err)
	}
	for _, e := range ents {
		c, err := fsys.Lookup(n, e.Name)
		if err != nil {
			return fmt.Errorf("lookup %s in the volume: %w", filepath.Join(shown, e.Name), err)
		}
		if err := copyOutAt(fsys, c, fd, e.Name, filepath.Join(shown, e.Name), p); err != nil {
			return err
		}
	}
	return nil
}

// replaceable removes name from dirfd if it is anything but a directory,
// so that what is copied out is created anew there.
func replaceable(dirfd int, name, shown string) error {
	var st unix.Stat_t
	err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == unix.ENOENT:
		return nil
	case err != nil:
		return fmt.Errorf("%s: %w", shown, err)
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return fmt.Errorf("%s exists and is a directory", shown)
	}
	if err := unix.Unlinkat(dirfd, name, 0); err != nil {
		return fmt.Errorf("replace %s: %w", shown, err)
	}
	return nil
}

func copyFileOut(fsys *tfs.FS, n *tfs.Node, dirfd int, name, shown string, mode uint32, p *progress) error {
	if err := replaceable(dirfd, name, shown); err != nil {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode|0o200)
	if err != nil {
		return fmt.Errorf("create %s: %w", shown, err)
	}
	f := os.NewFile(uintptr(fd), shown)
	if err := copySparse(fsys, n, f, func(k int64) { p.add(0, k) }); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", shown, err)
	}
	if err := copyXattrsOut(fsys, n, f); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(os.FileMode(mode)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// copySparse copies file n into the new, empty host file f as a sparse
// file: only the data regions of n (SEEK_DATA) are read and written, and
// the size is set at the end. A file whose size is all hole costs nothing,
// and one that claims more than the host can hold fails with EFBIG instead
// of writing zeros without end.
func copySparse(fsys *tfs.FS, n *tfs.Node, f *os.File, count func(int64)) error {
	size := fsys.Getattr(n).Size
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("size the copy to %d bytes: %w", size, err)
	}
	fsys.Open(n)
	defer fsys.Release(n)
	bp := getCopyBuf()
	defer putCopyBuf(bp)
	buf := *bp
	for off := int64(0); off < size; {
		data, err := fsys.Seek(n, off, unix.SEEK_DATA)
		if errors.Is(err, syscall.ENXIO) {
			return nil // holes to the end
		}
		if err != nil {
			return fmt.Errorf("find data after %d in the volume: %w", off, err)
		}
		hole, err := fsys.Seek(n, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("find a hole after %d in the volume: %w", data, err)
		}
		for off = data; off < hole; {
			k, err := fsys.Read(n, buf[:min(int64(len(buf)), hole-off)], off)
			if k > 0 {
				if _, werr := f.WriteAt(buf[:k], off); werr != nil {
					return werr
				}
				off += int64(k)
				count(int64(k))
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read at %d from the volume: %w", off, err)
			}
			if k == 0 {
				return fmt.Errorf("read at %d from the volume: file shrank", off)
			}
		}
	}
	return nil
}

// readFileTo writes the content of file n to w, telling count (if not nil)
// the size of each chunk written.
func readFileTo(fsys *tfs.FS, n *tfs.Node, w io.Writer, count func(int64)) error {
	fsys.Open(n)
	defer fsys.Release(n)
	bp := getCopyBuf()
	defer putCopyBuf(bp)
	buf := *bp
	var off int64
	for {
		k, err := fsys.Read(n, buf, off)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return werr
			}
			off += int64(k)
			if count != nil {
				count(int64(k))
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read at %d from the volume: %w", off, err)
		}
		if k < len(buf) {
			return nil
		}
	}
}

// timespec converts t, treating the zero Time (no timestamp) as the epoch.
func timespec(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{}
	}
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}
