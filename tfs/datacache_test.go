package tfs

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// CacheStats counts the data cache's work, and a write-back that fails in
// the background reaches Options.Logf (nothing else would see it).
func TestCacheStatsAndBackgroundErrorsLogged(t *testing.T) {
	dev := newVolume(t, 16<<20, "")
	q := testQueue(t)
	faulty := blockdev.NewFaulty(dev, q)
	logged := make(chan string, 100)
	logf := func(format string, args ...any) {
		select {
		case logged <- fmt.Sprintf(format, args...):
		default:
		}
	}
	fs := mountMem(t, faulty, Options{Queue: q, WritebackDelay: 20 * time.Millisecond, Logf: logf})
	f := mk(t)(fs.Create(fs.Root(), "f", true))
	data := pattern(7, 64<<10)
	writeAll(t, fs, f, data, 0)
	must(t, fs.Fsync(f, false))
	readAll(t, fs, f)
	st := fs.CacheStats()
	if st.Hits == 0 || st.WritebackPages < 16 || st.CachedPages == 0 {
		t.Errorf("after write, fsync and read: %+v, want hits, 16+ pages written back, pages cached", st)
	}

	// Fail every data write from here on; the timer's write-back fails.
	faulty.FailRange(3000*format.BlockSize, 16<<20, errors.New("injected write fault"), blockdev.OpWrite)
	writeAll(t, fs, f, pattern(8, 4096), 0)
	deadline := time.After(10 * time.Second)
	for found := false; !found; {
		select {
		case msg := <-logged:
			found = strings.Contains(msg, "injected write fault")
		case <-deadline:
			t.Fatal("the failed background write-back was not logged")
		}
	}
	if st := fs.CacheStats(); st.WriteErrors == 0 {
		t.Errorf("write errors not counted: %+v", st)
	}
	faulty.ClearFaults()
	// The failure is reported once, to whichever sync comes first (the
	// background flush may already have taken it); after that the pages,
	// still dirty, are written and nothing is left to report.
	_ = fs.Sync()
	must(t, fs.Close())
}
