package main

import (
	"errors"
	"fmt"

	"github.com/tfsmount/tfsmount/tfs"
)

func runFsck(args []string) int {
	fs := newFlagSet("fsck")
	partition := fs.String("partition", "", "")
	ops, done, err := parseFlags(fs, fsckHelp, args)
	if done {
		return exitOK
	}
	if err == nil && len(ops) != 1 {
		err = errors.New("want one IMAGE")
	}
	if err != nil {
		return usageError(exitFsckUsage, err, fsckHelp)
	}
	image := ops[0]
	v, err := openDevice(image, true)
	if err != nil {
		return fail(exitFsckFailed, "fsck: %v", err)
	}
	defer v.Close()
	rep, err := tfs.Fsck(v.dev, tfs.Options{ReadOnly: true, Partition: *partition, Queue: v.q, Pool: v.pool})
	if err != nil {
		return fail(exitFsckFailed, "fsck %s: %v", image, err)
	}
	fmt.Printf("%s: %s", image, rep)
	if rep.Clean() {
		return exitOK
	}
	fmt.Printf("%s: %d problem(s) found\n", image, len(rep.Problems))
	return exitFsckErrors
}
