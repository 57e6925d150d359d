package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// compact rewrites the log of an image offline (tfs.FS.Compact): a log
// grown long by many changes gets as short as the tree it describes,
// which also makes the next mount's replay faster.

const compactHelp = `Usage: tfsmount compact [--partition P] IMAGE

Rewrites the log of the TFS volume in IMAGE as one record of the current
tree, freeing the blocks that old, superseded records held, and prints the
log's size before and after. The image must not be mounted.
  --partition P   root (default), boot, or a byte offset
Exit status: 0 done, 1 bad usage, 2 failed.
`

func runCompact(args []string) int {
	fs := newFlagSet("compact")
	partition := fs.String("partition", "", "")
	ops, done, err := parseFlags(fs, compactHelp, args)
	if done {
		return exitOK
	}
	if err == nil && len(ops) != 1 {
		err = errors.New("want one IMAGE")
	}
	if err != nil {
		return usageError(exitUsage, err, compactHelp)
	}
	if err := compactImage(os.Stdout, ops[0], *partition); err != nil {
		return fail(exitSystem, "compact: %v", err)
	}
	return exitOK
}

// compactImage compacts the volume and reports the log blocks to w.
func compactImage(w io.Writer, image, partition string) error {
	v, err := openVolume(image, partition, false)
	if err != nil {
		return err
	}
	before := v.fs.LogBlocks()
	err = v.fs.Compact()
	after := v.fs.LogBlocks()
	if cerr := v.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write back to %s: %w", image, cerr)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", image, err)
	}
	fmt.Fprintf(w, "%s: log %d blocks (%s) before, %d blocks (%s) after\n",
		image, before, humanBytes(int64(before)*512), after, humanBytes(int64(after)*512))
	return nil
}
