package pagecache

import (
	"bytes"
	"testing"
	"time"
)

// Once more than an eighth of the budget is dirty, the flusher writes the
// oldest nodes back without waiting for the (hour-long) timer or a Sync,
// and the data it wrote is on the device.
func TestBackgroundWritebackPastDirtyMark(t *testing.T) {
	r := newRig(t, rigOpts{budget: 1 << 20, delay: time.Hour})
	mark := r.c.bgDirtyMark()
	f := r.newFile()
	data := bytes.Repeat([]byte("flusher!"), int(2*mark*PageSize/8))
	f.write(t, data, 0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := r.c.Stats()
		if s.DirtyPages <= mark/2 && s.WritebackPages > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %d pages dirty (mark %d), %d written back", s.DirtyPages, mark, s.WritebackPages)
		}
		time.Sleep(time.Millisecond)
	}
	if err := f.n.Sync(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.onDisk(f), data) {
		t.Fatal("device contents differ from what was written")
	}
	r.checkInvariants(t)
}

// Below the mark, dirty data waits for the timer.
func TestNoBackgroundWritebackBelowDirtyMark(t *testing.T) {
	r := newRig(t, rigOpts{budget: 1 << 20, delay: time.Hour})
	mark := r.c.bgDirtyMark()
	f := r.newFile()
	f.write(t, make([]byte, (mark-1)*PageSize), 0)
	time.Sleep(50 * time.Millisecond)
	if s := r.c.Stats(); s.WritebackPages != 0 || s.DirtyPages != mark-1 {
		t.Fatalf("below the mark: %d written back, %d dirty", s.WritebackPages, s.DirtyPages)
	}
}
