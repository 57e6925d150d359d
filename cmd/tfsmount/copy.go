package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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
// like cp -a: directories recursively, regular files, symlinks and
// modification times. Host FIFOs, devices and sockets cannot be stored
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
		return fsys.SetTimes(n, &atime, &mtime)
	}
	fmt.Fprintf(os.Stderr, "tfsmount: skipping %s: TFS cannot hold a %v\n", src, st.Mode().Type())
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
func copyOut(fsys *tfs.FS, n *tfs.Node, dest string, p *progress) error {
	a := fsys.Getattr(n)
	switch a.Kind {
	case tfs.KindDir:
		if err := os.Mkdir(dest, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		ents, err := fsys.ReadDir(n)
		if err != nil {
			return fmt.Errorf("read directory for %s: %w", dest, err)
		}
		for _, e := range ents {
			c, err := fsys.Lookup(n, e.Name)
			if err != nil {
				return fmt.Errorf("lookup %s in the volume: %w", filepath.Join(dest, e.Name), err)
			}
			if err := copyOut(fsys, c, filepath.Join(dest, e.Name), p); err != nil {
				return err
			}
		}
		p.add(1, 0)
	case tfs.KindSymlink:
		target, err := fsys.Readlink(n)
		if err != nil {
			return fmt.Errorf("readlink for %s: %w", dest, err)
		}
		if err := os.Symlink(target, dest); err != nil {
			return err
		}
		p.add(1, 0)
	case tfs.KindFile:
		mode := os.FileMode(0o644)
		if a.Exec {
			mode = 0o755
		}
		if a.ReadOnly {
			mode &^= 0o222
		}
		if err := copyFileOut(fsys, n, dest, mode, p); err != nil {
			return err
		}
		p.add(1, 0)
	default:
		fmt.Fprintf(os.Stderr, "tfsmount: skipping %s: a stale socket entry\n", dest)
		return nil
	}
	return setHostTimes(dest, a.Atime, a.Mtime)
}

func copyFileOut(fsys *tfs.FS, n *tfs.Node, dest string, mode os.FileMode, p *progress) error {
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode|0o200)
	if err != nil {
		return err
	}
	if err := readFileTo(fsys, n, f, func(k int64) { p.add(0, k) }); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", dest, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Chmod(dest, mode)
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

// setHostTimes sets atime and mtime of dest without following a symlink.
func setHostTimes(dest string, atime, mtime time.Time) error {
	ts := []unix.Timespec{timespec(atime), timespec(mtime)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dest, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", dest, err)
	}
	return nil
}

// timespec converts t, treating the zero Time (no timestamp) as the epoch.
func timespec(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{}
	}
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}
