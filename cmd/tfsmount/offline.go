package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"syscall"

	"github.com/tfsmount/tfsmount/tfs"
)

// cleanGuestPath makes p an absolute, clean guest path.
func cleanGuestPath(p string) string {
	return path.Clean("/" + p)
}

func runLs(args []string) int {
	fs := newFlagSet("ls")
	long := fs.Bool("l", false, "")
	recursive := fs.Bool("R", false, "")
	partition := fs.String("partition", "", "")
	ops, done, err := parseFlags(fs, lsHelp, args)
	if done {
		return exitOK
	}
	if err == nil && (len(ops) < 1 || len(ops) > 2) {
		err = errors.New("want IMAGE [PATH]")
	}
	if err != nil {
		return usageError(exitUsage, err, lsHelp)
	}
	p := "/"
	if len(ops) == 2 {
		p = ops[1]
	}
	v, err := openVolume(ops[0], *partition, true)
	if err != nil {
		return fail(exitSystem, "%v", err)
	}
	defer v.Close()
	p = cleanGuestPath(p)
	n, err := v.fs.Resolve(p)
	if err != nil {
		return fail(exitSystem, "%s: %s: %v", ops[0], p, err)
	}
	w := os.Stdout
	if v.fs.Getattr(n).Kind != tfs.KindDir {
		printEntry(w, v.fs, n, p, *long)
		return exitOK
	}
	if err := listDir(w, v.fs, n, p, *long, *recursive, !*recursive); err != nil {
		return fail(exitSystem, "%s: %v", ops[0], err)
	}
	return exitOK
}

// listDir prints the entries of dir (at guest path p), then, with
// recursive, each subdirectory under a "path:" header as ls -R does.
func listDir(w io.Writer, fsys *tfs.FS, dir *tfs.Node, p string, long, recursive, bare bool) error {
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if !bare {
		fmt.Fprintf(w, "%s:\n", p)
	}
	var subdirs []string
	for _, e := range ents {
		c, err := fsys.Lookup(dir, e.Name)
		if err != nil {
			return fmt.Errorf("%s: %w", path.Join(p, e.Name), err)
		}
		printEntry(w, fsys, c, e.Name, long)
		if e.Kind == tfs.KindDir {
			subdirs = append(subdirs, e.Name)
		}
	}
	if !recursive {
		return nil
	}
	for _, name := range subdirs {
		c, err := fsys.Lookup(dir, name)
		if err != nil {
			return fmt.Errorf("%s: %w", path.Join(p, name), err)
		}
		fmt.Fprintln(w)
		if err := listDir(w, fsys, c, path.Join(p, name), long, recursive, false); err != nil {
			return err
		}
	}
	return nil
}

func printEntry(w io.Writer, fsys *tfs.FS, n *tfs.Node, name string, long bool) {
	if !long {
		fmt.Fprintln(w, name)
		return
	}
	a := fsys.Getattr(n)
	kind := map[tfs.Kind]byte{tfs.KindFile: '-', tfs.KindDir: 'd', tfs.KindSymlink: 'l', tfs.KindSocket: 's'}[a.Kind]
	flags := ""
	if a.Exec {
		flags += "x"
	}
	if a.ReadOnly {
		flags += "r"
	}
	if flags == "" {
		flags = "-"
	}
	mtime := "-"
	if !a.Mtime.IsZero() && a.Mtime.Unix() != 0 {
		mtime = a.Mtime.Format("2006-01-02 15:04:05")
	}
	line := fmt.Sprintf("%c %-2s %3d %12d %19s %s", kind, flags, a.Nlink, a.Size, mtime, name)
	if a.Kind == tfs.KindSymlink {
		if t, err := fsys.Readlink(n); err == nil {
			line += " -> " + t
		}
	}
	fmt.Fprintln(w, line)
}

func runCat(args []string) int {
	fs := newFlagSet("cat")
	partition := fs.String("partition", "", "")
	ops, done, err := parseFlags(fs, catHelp, args)
	if done {
		return exitOK
	}
	if err == nil && len(ops) != 2 {
		err = errors.New("want IMAGE PATH")
	}
	if err != nil {
		return usageError(exitUsage, err, catHelp)
	}
	v, err := openVolume(ops[0], *partition, true)
	if err != nil {
		return fail(exitSystem, "%v", err)
	}
	defer v.Close()
	p := cleanGuestPath(ops[1])
	n, err := v.fs.Resolve(p)
	if err != nil {
		return fail(exitSystem, "%s: %s: %v", ops[0], p, err)
	}
	if k := v.fs.Getattr(n).Kind; k != tfs.KindFile {
		return fail(exitSystem, "%s: %s is not a regular file", ops[0], p)
	}
	if err := readFileTo(v.fs, n, os.Stdout, nil); err != nil {
		return fail(exitSystem, "%s: %s: %v", ops[0], p, err)
	}
	return exitOK
}

func runGet(args []string) int {
	fs := newFlagSet("get")
	partition := fs.String("partition", "", "")
	ops, done, err := parseFlags(fs, getHelp, args)
	if done {
		return exitOK
	}
	if err == nil && len(ops) != 3 {
		err = errors.New("want IMAGE PATH DEST")
	}
	if err != nil {
		return usageError(exitUsage, err, getHelp)
	}
	v, err := openVolume(ops[0], *partition, true)
	if err != nil {
		return fail(exitSystem, "%v", err)
	}
	defer v.Close()
	p := cleanGuestPath(ops[1])
	n, err := v.fs.Resolve(p)
	if err != nil {
		return fail(exitSystem, "%s: %s: %v", ops[0], p, err)
	}
	dest := ops[2]
	// cp -a: an existing directory receives the copy under the source's
	// name; the root has no name, so its contents go into the directory.
	if st, err := os.Stat(dest); err == nil && st.IsDir() && p != "/" {
		dest = filepath.Join(dest, path.Base(p))
	}
	prog := newProgress("copied")
	err = copyOut(v.fs, n, dest, prog)
	prog.done()
	if err != nil {
		return fail(exitSystem, "get %s: %v", p, err)
	}
	return exitOK
}

func runPut(args []string) int {
	fs := newFlagSet("put")
	partition := fs.String("partition", "", "")
	ops, done, err := parseFlags(fs, putHelp, args)
	if done {
		return exitOK
	}
	if err == nil && len(ops) != 3 {
		err = errors.New("want IMAGE SRC PATH")
	}
	if err != nil {
		return usageError(exitUsage, err, putHelp)
	}
	src := ops[1]
	if _, err := os.Lstat(src); err != nil {
		return fail(exitSystem, "%v", err)
	}
	v, err := openVolume(ops[0], *partition, false)
	if err != nil {
		return fail(exitSystem, "%v", err)
	}
	p := cleanGuestPath(ops[2])
	srcAbs, _ := filepath.Abs(src)
	dir, name, err := putTarget(v.fs, p, filepath.Base(srcAbs))
	if err == nil {
		prog := newProgress("copied")
		err = copyIn(v.fs, src, dir, name, prog)
		prog.done()
	}
	if cerr := v.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("write back to %s: %w", ops[0], cerr)
	}
	if err != nil {
		return fail(exitSystem, "put %s: %v", src, err)
	}
	return exitOK
}

// putTarget finds where 'put SRC PATH' copies to, as cp -a would: into
// PATH/base(SRC) when PATH is an existing directory, else PATH itself
// (whose parent must exist).
func putTarget(fsys *tfs.FS, p, srcBase string) (*tfs.Node, string, error) {
	n, err := fsys.Resolve(p)
	if err == nil && fsys.Getattr(n).Kind == tfs.KindDir {
		return n, srcBase, nil
	}
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		return nil, "", fmt.Errorf("%s: %w", p, err)
	}
	if p == "/" {
		return nil, "", errors.New("the root is not a directory")
	}
	parent, err := fsys.Resolve(path.Dir(p))
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path.Dir(p), err)
	}
	if fsys.Getattr(parent).Kind != tfs.KindDir {
		return nil, "", fmt.Errorf("%s is not a directory", path.Dir(p))
	}
	return parent, path.Base(p), nil
}
