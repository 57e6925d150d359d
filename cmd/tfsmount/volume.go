package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/heap"
	"github.com/tfsmount/tfsmount/pagecache"
	"github.com/tfsmount/tfsmount/tfs"
)

// offlineCacheSize is the page budget of the offline commands (64 MiB), a
// quarter of a mount's: they are short-lived and read or write each file
// once, so a larger cache would only hold more memory.
const offlineCacheSize = pagecache.DefaultBudget / 4

// volume is an image opened without FUSE, for the offline commands.
type volume struct {
	q    *bh.Queue
	pool *heap.PagePool
	dev  blockdev.Device
	fs   *tfs.FS
}

// openDevice opens image with a fresh bhqueue and page pool.
func openDevice(image string, readOnly bool) (*volume, error) {
	v := &volume{q: bh.NewQueue(2), pool: heap.NewPagePool(heap.PoolConfig{Budget: offlineCacheSize})}
	dev, err := openLocked(image, blockdev.OpenOptions{ReadOnly: readOnly, IO: "auto", Queue: v.q, Pool: v.pool})
	if err != nil {
		v.q.Close()
		return nil, fmt.Errorf("%s", describeOpenError(image, err))
	}
	v.dev = dev
	return v, nil
}

// lockWait is how long opening an image waits for another tfsmount to let
// go of it. After 'umount' the kernel forgets the mount at once while the
// daemon may still be writing back; a mount, fsck or ls right after must
// wait for that instead of failing. A real second mount still fails, after
// this delay.
const lockWait = 15 * time.Second

// openLocked is blockdev.Open, retried for up to lockWait while the image
// is locked by another process but not mounted (a daemon finishing its
// write-back after umount). A mounted image fails at once.
func openLocked(image string, opts blockdev.OpenOptions) (blockdev.Device, error) {
	deadline := time.Now().Add(lockWait)
	for {
		dev, err := blockdev.Open(image, opts)
		if err == nil || !isLockConflict(err) || time.Now().After(deadline) || isMountedSource(image) {
			return dev, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// isMountedSource reports whether a FUSE mount has image (as given, or as
// an absolute path) as its source.
func isMountedSource(image string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	abs, _ := filepath.Abs(image)
	for _, line := range strings.Split(string(b), "\n") {
		// Fields after the " - " separator: type, source, super options.
		_, after, ok := strings.Cut(line, " - ")
		f := strings.Fields(after)
		if !ok || len(f) < 2 || !strings.HasPrefix(f[0], "fuse") {
			continue
		}
		src := unescapeMountinfo(f[1])
		if src == image || src == abs {
			return true
		}
	}
	return false
}

// unescapeMountinfo undoes the octal escapes (\040 for space...) of
// /proc/self/mountinfo fields.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// isLockConflict reports whether err says another process holds the image.
func isLockConflict(err error) bool {
	return errors.Is(err, blockdev.ErrLocked)
}

// mountTFS replays the volume's log with the garbage collector relaxed.
// Replay builds one large object graph that stays live, so collections
// during it free almost nothing: on a 100,000-file volume they were about a
// fifth of the mount time, and relaxing them costs ~10% more peak memory.
func mountTFS(dev blockdev.Device, opts tfs.Options) (*tfs.FS, error) {
	old := debug.SetGCPercent(400)
	defer debug.SetGCPercent(old)
	return tfs.Mount(dev, opts)
}

// openVolume opens and mounts (without FUSE) the volume in image.
func openVolume(image, partition string, readOnly bool) (*volume, error) {
	v, err := openDevice(image, readOnly)
	if err != nil {
		return nil, err
	}
	v.fs, err = mountTFS(v.dev, tfs.Options{
		ReadOnly: readOnly, Partition: partition,
		CacheSize: offlineCacheSize, Pool: v.pool, Queue: v.q,
	})
	if err != nil {
		v.dev.Close()
		v.q.Close()
		return nil, fmt.Errorf("%s: not a readable TFS volume: %w", image, err)
	}
	return v, nil
}

// Close writes back everything (for a writable volume) and releases it.
func (v *volume) Close() error {
	var err error
	if v.fs != nil {
		err = v.fs.Close()
	}
	if derr := v.dev.Close(); derr != nil && err == nil {
		err = derr
	}
	v.q.Close()
	if perr := v.pool.Close(); perr != nil && err == nil {
		err = fmt.Errorf("page buffers: %w", perr)
	}
	return err
}

// newFlagSet returns a silent flag set that reports errors instead of
// exiting; parseFlags prints the command's help text.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses flags anywhere among args (flag stops at the first
// operand; users write 'ls IMAGE -l' too) and returns the operands. It
// returns done=true after printing help.
func parseFlags(fs *flag.FlagSet, help string, args []string) (operands []string, done bool, err error) {
	for {
		if err := fs.Parse(args); err != nil {
			if err == flag.ErrHelp {
				fmt.Print(help)
				return nil, true, nil
			}
			return nil, false, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return operands, false, nil
		}
		if rest[0] == "--" {
			return append(operands, rest[1:]...), false, nil
		}
		operands = append(operands, rest[0])
		args = rest[1:]
	}
}

// usageError prints err and the command's help to stderr and returns code.
func usageError(code int, err error, help string) int {
	fmt.Fprintf(os.Stderr, "tfsmount: %v\n\n%s", err, help)
	return code
}
