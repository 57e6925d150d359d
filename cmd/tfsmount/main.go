// Command tfsmount mounts TFS volumes (the filesystem of the Nanos
// unikernel) through FUSE, read-write and byte-compatible with Nanos, and
// works on images offline: mkfs, fsck, compact, ls, cat, get, put.
//
// This package owns the command line: argument and -o parsing, the
// mount(8) helper conventions, daemonizing, signals and exit codes. The
// filesystem is package tfs; its FUSE face is package tfs/fusefs.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
)

// Exit codes. Mounting follows mount(8); fsck follows fsck(8).
const (
	exitOK         = 0
	exitUsage      = 1  // mount(8): incorrect invocation or permissions
	exitSystem     = 2  // mount(8): system error (out of memory, cannot fork...)
	exitMountFail  = 32 // mount(8): mount failure
	exitFsckFixed  = 1  // fsck(8): filesystem errors corrected
	exitFsckErrors = 4  // fsck(8): filesystem errors left uncorrected
	exitFsckFailed = 8  // fsck(8): operational error
	exitFsckUsage  = 16 // fsck(8): usage or syntax error
)

// version may be set at build time with -ldflags "-X main.version=...";
// otherwise versionString reports the git commit Go recorded in the binary.
var version = ""

// versionString is version, or the VCS revision and time from the build
// information ("+dirty" when built from a modified tree).
func versionString() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown build)"
	}
	var rev, when, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev == "" {
		return "(built without version control information) " + info.GoVersion
	}
	return fmt.Sprintf("%.12s%s (%s, %s)", rev, dirty, when, info.GoVersion)
}

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
	case "compact":
		return runCompact(args[2:])
	case "ls":
		return runLs(args[2:])
	case "cat":
		return runCat(args[2:])
	case "get":
		return runGet(args[2:])
	case "put":
		return runPut(args[2:])
	case "version", "--version":
		fmt.Printf("tfsmount %s\n", versionString())
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
