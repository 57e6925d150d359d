// Command tfsmount mounts TFS volumes (the filesystem of the Nanos
// unikernel) through FUSE, read-write and byte-compatible with Nanos, and
// works on images offline: mkfs, fsck, ls, cat, get, put.
//
// This package owns the command line: argument and -o parsing, the
// mount(8) helper conventions, daemonizing, signals and exit codes. The
// filesystem is package tfs; its FUSE face is package tfs/fusefs.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Exit codes. Mounting follows mount(8); fsck follows fsck(8).
const (
	exitOK         = 0
	exitUsage      = 1  // mount(8): incorrect invocation or permissions
	exitSystem     = 2  // mount(8): system error (out of memory, cannot fork...)
	exitMountFail  = 32 // mount(8): mount failure
	exitFsckErrors = 4  // fsck(8): filesystem errors left uncorrected
	exitFsckFailed = 8  // fsck(8): operational error
	exitFsckUsage  = 16 // fsck(8): usage or syntax error
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args))
}

// run dispatches on the program name and the first argument. Under the
// name mount.fuse.tfsmount (or mount.tfs) it is a mount(8) helper.
func run(args []string) int {
	name := filepath.Base(args[0])
	if strings.HasPrefix(name, "mount.") {
		return runMountHelper(args[1:])
	}
	if len(args) < 2 {
		fmt.Fprint(os.Stderr, usageText)
		return exitUsage
	}
	switch args[1] {
	case "mkfs":
		return runMkfs(args[2:])
	case "fsck":
		return runFsck(args[2:])
	case "ls":
		return runLs(args[2:])
	case "cat":
		return runCat(args[2:])
	case "get":
		return runGet(args[2:])
	case "put":
		return runPut(args[2:])
	case "version", "--version":
		fmt.Printf("tfsmount %s\n", version)
		return exitOK
	case "help", "-h", "--help":
		if len(args) > 2 {
			if text, ok := commandHelp[args[2]]; ok {
				fmt.Print(text)
				return exitOK
			}
		}
		fmt.Print(usageText)
		return exitOK
	}
	return runMountCommand(args[1:])
}

// fail prints a message prefixed with the program name and returns code.
func fail(code int, format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "tfsmount: "+format+"\n", args...)
	return code
}
