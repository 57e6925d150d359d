// Command metabench times the metadata part of scripts/bench.sh: it creates
// (open O_CREAT|O_EXCL, close), stats and unlinks N small files under a
// directory, spread over subdirectories of at most 1000 entries, and prints
// one line per phase: "PHASE OPS SECONDS OPS_PER_SEC". With -fsync, each
// file is fsync'd before it is closed (a mail spool, a package manager).
//
// It belongs to the scripts layer: a measuring tool, not part of tfsmount.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	n := flag.Int("n", 100000, "number of files")
	perDir := flag.Int("per-dir", 1000, "files per subdirectory")
	fsync := flag.Bool("fsync", false, "fsync each file after writing it")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: metabench [-n N] [-per-dir M] DIR")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *n, *perDir, *fsync); err != nil {
		fmt.Fprintln(os.Stderr, "metabench:", err)
		os.Exit(1)
	}
}

func run(root string, n, perDir int, fsync bool) error {
	if perDir < 1 {
		return fmt.Errorf("-per-dir must be at least 1")
	}
	base := filepath.Join(root, "metabench")
	if err := os.Mkdir(base, 0o755); err != nil {
		return err
	}
	paths := make([]string, n)
	for i := range paths {
		dir := filepath.Join(base, fmt.Sprintf("d%04d", i/perDir))
		if i%perDir == 0 {
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
		}
		paths[i] = filepath.Join(dir, fmt.Sprintf("f%07d", i))
	}
	payload := []byte("small file\n")
	create := "create"
	if fsync {
		create = "create+fsync"
	}
	phase(create, n, func() error {
		for _, p := range paths {
			fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
			if err != nil {
				return fmt.Errorf("create %s: %w", p, err)
			}
			if _, err := unix.Write(fd, payload); err != nil {
				return fmt.Errorf("write %s: %w", p, err)
			}
			if fsync {
				if err := unix.Fsync(fd); err != nil {
					return fmt.Errorf("fsync %s: %w", p, err)
				}
			}
			if err := unix.Close(fd); err != nil {
				return fmt.Errorf("close %s: %w", p, err)
			}
		}
		return nil
	})
	// Drop the kernel's dentry and attribute caches so stat reaches the
	// filesystem (best effort: needs root).
	unix.Sync()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("2\n"), 0)
	phase("stat", n, func() error {
		var st unix.Stat_t
		for _, p := range paths {
			if err := unix.Stat(p, &st); err != nil {
				return fmt.Errorf("stat %s: %w", p, err)
			}
		}
		return nil
	})
	phase("unlink", n, func() error {
		for _, p := range paths {
			if err := unix.Unlink(p); err != nil {
				return fmt.Errorf("unlink %s: %w", p, err)
			}
		}
		return nil
	})
	return os.RemoveAll(base)
}

func phase(name string, n int, f func() error) {
	start := time.Now()
	if err := f(); err != nil {
		fmt.Fprintln(os.Stderr, "metabench:", err)
		os.Exit(1)
	}
	s := time.Since(start).Seconds()
	fmt.Printf("%s %d %.3f %.0f\n", name, n, s, float64(n)/s)
}
