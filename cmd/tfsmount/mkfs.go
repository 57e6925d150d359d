package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// defaultImageSize is the size of an image file mkfs creates without --size.
const defaultImageSize = 64 << 20

// minImageSize leaves room for the log and its reserve.
const minImageSize = 2 << 20

func runMkfs(args []string) int {
	fs := newFlagSet("mkfs")
	label := fs.String("label", "", "")
	sizeArg := fs.String("size", "", "")
	from := fs.String("from", "", "")
	ops, done, err := parseFlags(fs, mkfsHelp, args)
	if done {
		return exitOK
	}
	// The size may also follow IMAGE ('mkfs IMAGE 1G', as mkfs.ext4 and
	// the xfstests setup write it).
	if err == nil && len(ops) == 2 {
		if *sizeArg != "" {
			err = errors.New("size given both as --size and after IMAGE")
		}
		*sizeArg = ops[1]
	} else if err == nil && len(ops) != 1 {
		err = errors.New("want IMAGE [SIZE]")
	}
	var size int64
	if err == nil && *sizeArg != "" {
		size, err = parseSize(*sizeArg)
		if err == nil && size < minImageSize {
			err = fmt.Errorf("size %s is too small (at least 2M)", *sizeArg)
		}
	}
	if err == nil && len(*label) > 31 {
		err = fmt.Errorf("--label %q is longer than 31 bytes", *label)
	}
	if err == nil && *from != "" {
		if st, serr := os.Stat(*from); serr != nil {
			err = serr
		} else if !st.IsDir() {
			err = fmt.Errorf("--from %s is not a directory", *from)
		}
	}
	if err != nil {
		return usageError(exitUsage, err, mkfsHelp)
	}
	image := ops[0]
	if err := sizeImage(image, size); err != nil {
		return fail(exitSystem, "mkfs: %v", err)
	}
	v, err := openDevice(image, false)
	if err != nil {
		return fail(exitSystem, "mkfs: %v", err)
	}
	err = format.Mkfs(v.dev, format.MkfsOptions{Label: *label})
	if cerr := v.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fail(exitSystem, "mkfs %s: %v", image, err)
	}
	if *from == "" {
		return exitOK
	}
	v, err = openVolume(image, "", false)
	if err != nil {
		return fail(exitSystem, "mkfs: %v", err)
	}
	prog := newProgress("copied")
	err = copyTreeIn(v.fs, *from, prog)
	prog.done()
	if cerr := v.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write back to %s: %w", image, cerr)
	}
	if err != nil {
		return fail(exitSystem, "mkfs --from %s: %v", *from, err)
	}
	return exitOK
}

// copyTreeIn copies the contents of the host directory src into the root.
func copyTreeIn(fsys *tfs.FS, src string, p *progress) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := copyIn(fsys, src+"/"+e.Name(), fsys.Root(), e.Name(), p); err != nil {
			return err
		}
	}
	return nil
}

// sizeImage creates image as a sparse file of size bytes (default 64M) if
// it does not exist, or grows a regular file to size. Block devices keep
// their size.
func sizeImage(image string, size int64) error {
	if blockdev.IsNBDURI(image) {
		if size != 0 {
			fmt.Fprintf(os.Stderr, "tfsmount: mkfs: %s is an NBD export; --size ignored\n", image)
		}
		return nil // an export has the size its server gives it
	}
	st, err := os.Stat(image)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if size == 0 {
			size = defaultImageSize
		}
		f, err := os.OpenFile(image, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		if err := f.Truncate(size); err != nil {
			f.Close()
			os.Remove(image)
			return err
		}
		return f.Close()
	case err != nil:
		return err
	case st.Mode().IsRegular():
		if size > st.Size() {
			return os.Truncate(image, size)
		}
		if size != 0 && size < st.Size() {
			fmt.Fprintf(os.Stderr, "tfsmount: mkfs: %s is larger than --size (%d bytes); using all of it\n", image, st.Size())
		}
		if st.Size() < minImageSize {
			return fmt.Errorf("%s has %d bytes; a volume needs at least 2M (use --size)", image, st.Size())
		}
		return nil
	case st.Mode()&os.ModeDevice != 0:
		if size != 0 {
			fmt.Fprintf(os.Stderr, "tfsmount: mkfs: %s is a device; --size ignored\n", image)
		}
		return nil
	}
	return fmt.Errorf("%s is neither a regular file nor a block device", image)
}
