package main

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// progress shows how far a long copy got, on one rewritten stderr line,
// only when stderr is a terminal (never in logs or pipes).
type progress struct {
	verb  string
	tty   bool
	files int64
	bytes int64
	last  time.Time
	shown bool
}

func newProgress(verb string) *progress {
	_, err := unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS)
	return &progress{verb: verb, tty: err == nil}
}

// add counts files and bytes done and redraws at most five times a second.
func (p *progress) add(files, bytes int64) {
	p.files += files
	p.bytes += bytes
	if !p.tty {
		return
	}
	if now := time.Now(); now.Sub(p.last) >= 200*time.Millisecond {
		p.last = now
		p.shown = true
		fmt.Fprintf(os.Stderr, "\r%s %d files, %s ", p.verb, p.files, humanBytes(p.bytes))
	}
}

// done ends the progress line, if one was drawn.
func (p *progress) done() {
	if p.shown {
		fmt.Fprintf(os.Stderr, "\r%s %d files, %s\n", p.verb, p.files, humanBytes(p.bytes))
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		f /= unit
		if f < unit {
			return fmt.Sprintf("%.1f %s", f, u)
		}
	}
	return fmt.Sprintf("%.1f PiB", f/unit)
}
