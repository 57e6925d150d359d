package main

import (
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/heap"
	"github.com/tfsmount/tfsmount/pagecache"
	"github.com/tfsmount/tfsmount/tfs"
	"github.com/tfsmount/tfsmount/tfs/fusefs"
)

// mountArgs is a parsed mount command line.
type mountArgs struct {
	foreground bool
	fake       bool // mount(8) helper -f: pretend, do nothing
	image, dir string
	optList    []string // the -o lists as given, for re-executing
	opts       mountOptions
}

// parseMountArgs reads [-f] [-o OPTS]... IMAGE DIR, options in any place
// (mount.fuse3 puts -o after the operands). As a mount(8) helper, -f means
// "fake" and -n, -s, -v, -t TYPE are accepted.
func parseMountArgs(args []string, helper bool) (mountArgs, error) {
	a := mountArgs{opts: defaultMountOptions()}
	var pos []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case arg == "-o":
			if i+1 >= len(args) {
				return a, errors.New("-o needs a list of options")
			}
			i++
			a.optList = append(a.optList, args[i])
		case strings.HasPrefix(arg, "-o"):
			a.optList = append(a.optList, arg[2:])
		case arg == "-f":
			if helper {
				a.fake = true
			} else {
				a.foreground = true
			}
		case arg == "-d":
			a.optList = append(a.optList, "debug")
		case helper && (arg == "-n" || arg == "-s" || arg == "-v"):
		case helper && arg == "-t":
			i++
		case helper && strings.HasPrefix(arg, "-t"):
		case len(arg) > 1 && arg[0] == '-':
			return a, fmt.Errorf("unknown flag %s", arg)
		default:
			pos = append(pos, arg)
		}
	}
	if len(pos) != 2 {
		return a, fmt.Errorf("want IMAGE and MOUNTPOINT, got %d operands", len(pos))
	}
	a.image, a.dir = pos[0], pos[1]
	for _, l := range a.optList {
		if err := parseMountOptions(l, &a.opts); err != nil {
			return a, err
		}
	}
	a.opts.finish()
	if a.opts.FsName == "" {
		a.opts.FsName = a.image
	}
	return a, nil
}

func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "-h" || a == "--help" {
			return true
		}
		if a == "--" {
			return false
		}
	}
	return false
}

// runMountCommand is 'tfsmount [-f] [-o OPTS] IMAGE DIR'.
func runMountCommand(args []string) int {
	return mountMain(args, false)
}

// runMountHelper is the mount(8) helper entry (mount.fuse.tfsmount).
func runMountHelper(args []string) int {
	return mountMain(args, true)
}

func mountMain(args []string, helper bool) int {
	if wantsHelp(args) {
		fmt.Print(mountHelp)
		return exitOK
	}
	a, err := parseMountArgs(args, helper)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tfsmount: %v\n\n%s", err, usageText)
		return exitUsage
	}
	if a.fake {
		return exitOK
	}
	if a.opts.Remount {
		return remount(a)
	}
	readyFD := os.Getenv(readyEnv)
	if readyFD == "" {
		for _, w := range a.opts.Warnings {
			fmt.Fprintf(os.Stderr, "tfsmount: warning: ignoring unknown mount option %q\n", w)
		}
		if a.opts.openToAll() {
			fmt.Fprintf(os.Stderr, "tfsmount: warning: %s\n", openToAllWarning)
		}
	}
	if st, err := os.Stat(a.dir); err != nil {
		return fail(exitMountFail, "mount point %s: %v", a.dir, err)
	} else if !st.IsDir() {
		return fail(exitMountFail, "mount point %s is not a directory", a.dir)
	}
	if !a.foreground {
		return daemonize(args, helper)
	}
	var ready *os.File
	if readyFD != "" {
		ready = readyPipe(readyFD)
	}
	return serve(a, ready)
}

// mountState is everything a running mount holds, for shutdown and stats.
type mountState struct {
	q      *bh.Queue
	pool   *heap.PagePool
	dev    blockdev.Device
	fsys   *tfs.FS
	server *fusefs.Server
	root   fs.InodeEmbedder // the fusefs root, for its error counter
}

// serve mounts and serves until unmounted. ready, if not nil, is the pipe
// to the parent process waiting in daemonize: it gets "ok" once the mount
// exists, or the error.
func serve(a mountArgs, ready *os.File) int {
	logger, err := newLogger(ready != nil, a.opts.LogFile)
	if err != nil {
		if ready != nil {
			reportReady(ready, err.Error())
		}
		return fail(exitMountFail, "%v", err)
	}
	logf := logger.Printf
	for _, w := range a.opts.Warnings {
		logf("warning: ignoring unknown mount option %q", w)
	}
	if a.opts.openToAll() {
		logf("warning: %s", openToAllWarning)
	}
	failMount := func(format string, args ...any) int {
		msg := fmt.Sprintf(format, args...)
		if ready != nil {
			reportReady(ready, msg)
		} else {
			fmt.Fprintf(os.Stderr, "tfsmount: %s\n", msg)
		}
		return exitMountFail
	}

	stopProfile, err := startCPUProfile()
	if err != nil {
		logf("%v", err)
	}
	defer stopProfile()

	o := a.opts
	cacheSize := o.CacheSize
	if cacheSize == 0 {
		cacheSize = pagecache.DefaultBudget
	}
	st := &mountState{q: bh.NewQueue(2)}
	defer st.q.Close()
	st.pool = heap.NewPagePool(heap.PoolConfig{Budget: cacheSize})
	dev, err := openLocked(a.image, blockdev.OpenOptions{
		ReadOnly:   o.ReadOnly,
		IO:         o.IO,
		Queue:      st.q,
		Pool:       st.pool,
		Logf:       logf,
		NBDTimeout: o.NBDTimeout,
	})
	if err != nil {
		return failMount("%s", describeOpenError(a.image, err))
	}
	dev, saveRecording, err := recordDevice(dev, st.q)
	if err != nil {
		dev.Close()
		return failMount("%v", err)
	}
	st.dev = dev
	st.fsys, err = mountTFS(dev, tfs.Options{
		ReadOnly:  o.ReadOnly,
		Partition: o.Partition,
		CacheSize: cacheSize,
		Pool:      st.pool,
		Queue:     st.q,
		Logf:      logf,
	})
	if err != nil {
		dev.Close()
		return failMount("%s: not a mountable TFS volume: %v", a.image, err)
	}
	kernelOpts := []string{}
	if o.DefaultPermissions {
		kernelOpts = append(kernelOpts, "default_permissions")
	}
	if o.ReadOnly || dev.ReadOnly() {
		kernelOpts = append(kernelOpts, "ro")
	}
	cfg := fusefs.Config{
		UID: o.UID, GID: o.GID, Umask: o.Umask,
		IgnoreChmod: o.IgnoreChmod,
		Logf:        logf,
		// Without OPEN, Open's readonly check for callers other than
		// root is not made: only where the kernel checks modes or only
		// root can enter.
		NoOpen: o.DefaultPermissions || (os.Geteuid() == 0 && !o.AllowOther),
	}
	st.root = fusefs.NewRoot(st.fsys, cfg)
	st.server, err = fusefs.Mount(a.dir, st.root, fusefs.MountOptions{
		FsName:     o.FsName,
		AllowOther: o.AllowOther,
		KernelOpts: kernelOpts,
		Debug:      o.Debug,
		Logger:     logger,
		Writeback:  o.WritebackCache,
		URing:      o.FuseURing,
		Logf:       logf,
	})
	if err != nil {
		closeVolume(st, logf)
		return failMount("%v", err)
	}
	if ready != nil {
		reportReady(ready, "")
		// The daemon must not keep the directory it was started in busy.
		_ = os.Chdir("/")
	}

	stopSignals := handleSignals(st, a.dir, logger)
	st.server.Wait()
	stopSignals()
	if o.Stats {
		writeStats(logger.Writer(), st)
	}
	if err := closeVolume(st, logf); err != nil {
		logf("%s: writing back at unmount failed: %v", a.image, err)
		return exitSystem
	}
	if err := saveRecording(); err != nil {
		logf("%v", err)
		return exitSystem
	}
	return exitOK
}

// closeVolume writes everything back and releases the device.
func closeVolume(st *mountState, logf func(string, ...any)) error {
	err := st.fsys.Close()
	if derr := st.dev.Close(); derr != nil && err == nil {
		err = derr
	}
	if perr := st.pool.Close(); perr != nil {
		logf("page buffers: %v", perr)
	}
	return err
}

// describeOpenError explains the common reasons an image cannot be opened.
func describeOpenError(image string, err error) string {
	if isLockConflict(err) {
		return fmt.Sprintf("%s is in use by another tfsmount (mounted, or open for fsck, mkfs, put...); unmount it first", image)
	}
	if blockdev.IsNBDURI(image) {
		return err.Error() // it names the URI and says what failed
	}
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Sprintf("%s does not exist (create one with 'tfsmount mkfs %s')", image, image)
	}
	return fmt.Sprintf("cannot open %s: %v", image, err)
}

// handleSignals unmounts on SIGINT/SIGTERM and logs statistics on SIGUSR1.
// The returned function stops listening.
func handleSignals(st *mountState, dir string, logger *log.Logger) func() {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case sig := <-ch:
				switch sig {
				case syscall.SIGUSR1:
					writeStats(logger.Writer(), st)
				case syscall.SIGHUP:
					// No terminal to lose; keep serving.
				default:
					logger.Printf("%v: unmounting %s", sig, dir)
					if err := st.server.Unmount(); err != nil {
						// Busy: detach now, finish when the last user leaves.
						logger.Printf("unmount %s: %v; detaching it lazily", dir, err)
						if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
							logger.Printf("lazy unmount of %s: %v", dir, err)
						}
					}
				}
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}
