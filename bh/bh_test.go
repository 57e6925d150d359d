package bh

import (
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type counter struct{ n atomic.Int64 }

func (c *counter) RunBH() { c.n.Add(1) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

func TestQueueRunsInOrderWithOneWorker(t *testing.T) {
	q := NewQueue(1)
	var got []int
	for i := 0; i < 1000; i++ {
		q.PostFunc(func() { got = append(got, i) })
	}
	q.Close()
	for i, v := range got {
		if v != i {
			t.Fatalf("item %d ran as %d", i, v)
		}
	}
	if len(got) != 1000 {
		t.Fatalf("%d items ran, want 1000", len(got))
	}
	if q.Post(Func(func() { t.Error("ran after Close") })) {
		t.Fatal("Post after Close reported success")
	}
}

// TestPostNeverBlocks stalls every worker and keeps posting: an interrupt
// source must never wait for bottom halves.
func TestPostNeverBlocks(t *testing.T) {
	q := NewQueue(2)
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(2)
	for i := 0; i < 2; i++ {
		q.PostFunc(func() { started.Done(); <-release })
	}
	started.Wait()
	c := &counter{}
	done := make(chan struct{})
	go func() {
		for i := 0; i < 100000; i++ {
			q.Post(c)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Post blocked while the workers were stuck")
	}
	if q.Len() != 100000 {
		t.Fatalf("Len = %d, want 100000 queued", q.Len())
	}
	close(release)
	q.Close()
	if c.n.Load() != 100000 {
		t.Fatalf("%d ran, want 100000", c.n.Load())
	}
}

func TestPostFastPathAllocatesNothing(t *testing.T) {
	q := NewQueue(1)
	defer q.Close()
	c := &counter{}
	allocs := testing.AllocsPerRun(10000, func() {
		q.Post(c)
		for q.Len() > 128 { // stay inside the preallocated ring
			runtime.Gosched()
		}
	})
	if allocs != 0 {
		t.Fatalf("Post allocates %.2f per call, want 0", allocs)
	}
}

func TestMergeDeliversOnceThroughQueueWithFirstError(t *testing.T) {
	q := NewQueue(1)
	defer q.Close()
	first, second := errors.New("first"), errors.New("second")
	var calls atomic.Int32
	got := make(chan error, 2)
	m := NewMerge(q, func(err error) {
		calls.Add(1)
		got <- err
	})
	// The count never reaches zero while parts are added, even when each
	// part completes at once.
	for i := 0; i < 100; i++ {
		d := m.Add()
		switch i {
		case 10:
			d(first)
		case 50:
			d(second)
		default:
			d(nil)
		}
	}
	if calls.Load() != 0 || len(got) != 0 {
		t.Fatal("merge completed before Finish")
	}
	// Stall the only worker: if Finish ran the completion inline, it would
	// have run by the time Finish returns.
	release := make(chan struct{})
	stalled := make(chan struct{})
	q.PostFunc(func() { close(stalled); <-release })
	<-stalled
	m.Finish()
	if calls.Load() != 0 {
		t.Fatal("merge completion ran inline in Finish")
	}
	close(release)
	if err := <-got; err != first {
		t.Fatalf("merge error %v, want the first one", err)
	}
	flushed := make(chan struct{})
	q.PostFunc(func() { close(flushed) }) // one worker: runs after anything posted before
	<-flushed
	if calls.Load() != 1 {
		t.Fatalf("merge completed %d times", calls.Load())
	}
}

func TestMergeConcurrentParts(t *testing.T) {
	q := NewQueue(2)
	defer q.Close()
	for round := 0; round < 50; round++ {
		var calls atomic.Int32
		done := make(chan error, 2)
		m := NewMerge(q, func(err error) { calls.Add(1); done <- err })
		var wg sync.WaitGroup
		for i := 0; i < 64; i++ {
			d := m.Add()
			wg.Add(1)
			q.PostFunc(func() { defer wg.Done(); d(nil) })
		}
		m.Finish()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if calls.Load() != 1 {
			t.Fatalf("round %d: %d completions", round, calls.Load())
		}
	}
}

func TestMergeOverReleasePanics(t *testing.T) {
	q := NewQueue(1)
	defer q.Close()
	m := NewMerge(q, func(error) {})
	m.Finish()
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "released more times") {
			t.Fatalf("recover = %v", r)
		}
	}()
	m.Finish()
}

func TestCheckedCompletions(t *testing.T) {
	var n int
	d := Checked("test read", func(error) { n++ })
	before := Outstanding()
	if CheckEnabled && !containsSub(before, "test read") {
		t.Fatalf("Outstanding = %v, want the new completion listed", before)
	}
	d(nil)
	if n != 1 || containsSub(Outstanding(), "test read") {
		t.Fatalf("after the call: n=%d outstanding=%v", n, Outstanding())
	}
	if !CheckEnabled {
		d(nil) // release builds do not check
		if n != 2 {
			t.Fatal("release Checked is not the completion itself")
		}
		return
	}
	defer func() {
		r := recover()
		if r == nil || !strings.Contains(r.(string), "test read") || !strings.Contains(r.(string), "called twice") {
			t.Fatalf("second call: recover = %v", r)
		}
	}()
	d(nil)
}

func containsSub(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// TestMergeAddBH: a part added with AddBH that is the last to complete runs
// the merge's done in place (it is called from bh work, where the done would
// be posted to anyway); a plain part, or Finish, still posts it.
func TestMergeAddBH(t *testing.T) {
	q := NewQueue(1)
	defer q.Close()
	for _, lastIsBH := range []bool{true, false} {
		ran := make(chan string, 1)
		m := NewMerge(q, func(error) { ran <- "done" })
		bhPart, plain := m.AddBH(), m.Add()
		m.Finish()
		finished := make(chan string, 2)
		q.PostFunc(func() {
			if lastIsBH {
				plain(nil)
				bhPart(nil)
			} else {
				bhPart(nil)
				plain(nil)
			}
			// One worker: a posted done could not have run yet.
			select {
			case s := <-ran:
				finished <- s
			default:
				finished <- "not yet"
			}
		})
		want := "not yet"
		if lastIsBH {
			want = "done"
		}
		if got := <-finished; got != want {
			t.Errorf("last part AddBH=%v: done %q by the time the part returned, want %q", lastIsBH, got, want)
		}
		if !lastIsBH {
			<-ran // posted: it still runs, once
		}
	}
}
