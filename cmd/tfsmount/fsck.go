package main

import (
	"errors"
	"fmt"

	"github.com/tfsmount/tfsmount/tfs"
)

func runFsck(args []string) int {
	fs := newFlagSet("fsck")
	partition := fs.String("partition", "", "")
	repair := fs.Bool("repair", false, "")
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
	v, err := openDevice(image, !*repair)
	if err != nil {
		return fail(exitFsckFailed, "fsck: %v", err)
	}
	defer v.Close()
	opts := tfs.Options{ReadOnly: !*repair, Partition: *partition, Queue: v.q, Pool: v.pool}
	var changes []string
	var rep *tfs.FsckReport
	if *repair {
		changes, rep, err = tfs.Repair(v.dev, opts)
		for _, c := range changes {
			fmt.Printf("%s: repaired: %s\n", image, c)
		}
	} else {
		rep, err = tfs.Fsck(v.dev, opts)
	}
	if err != nil {
		return fail(exitFsckFailed, "fsck %s: %v", image, err)
	}
	fmt.Printf("%s: %s", image, rep)
	switch {
	case !rep.Clean():
		fmt.Printf("%s: %d problem(s) found\n", image, len(rep.Problems))
		if !*repair {
			fmt.Printf("%s: 'tfsmount fsck --repair %s' fixes what it can\n", image, image)
		}
		return exitFsckErrors
	case len(changes) > 0:
		fmt.Printf("%s: %d change(s) made; the volume is now clean\n", image, len(changes))
		return exitFsckFixed
	}
	return exitOK
}
