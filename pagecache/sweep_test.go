package pagecache

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
)

// sweepScenario is the fault-injection scenario of docs 5.10: over a file
// with data on the device, a write with a partial head and tail, a read of
// the whole file, and a Sync. It returns what the file must now hold
// (the model) and the outcome of each step.
type sweepOutcome struct {
	wrote   int
	wErr    error
	rErr    error
	readOK  bool
	syncErr error
}

const (
	sweepOff = PageSize - 300
	sweepLen = 3*PageSize + 600 // partial head page, two whole pages, partial tail page
)

func sweepSetup(t *testing.T, o rigOpts) (*rig, *faultDev, *file, []byte) {
	o.devSize = 4 << 20
	r, fd := faultRig(t, o)
	model := pattern(0, 5*PageSize+1000, 1)
	f := storedFile(t, r, model)
	return r, fd, f, model
}

func runSweepScenario(t *testing.T, r *rig, f *file, model []byte) ([]byte, sweepOutcome) {
	var out sweepOutcome
	data := pattern(sweepOff, sweepLen, 2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		out.wrote, out.wErr = f.n.Write(data, sweepOff, f.size)
		copy(model[sweepOff:], data[:out.wrote])
		got := make([]byte, len(model))
		k, err := f.n.Read(got, 0, f.size)
		out.rErr = err
		out.readOK = err == nil && k == len(model) && bytes.Equal(got, model)
		out.syncErr = f.n.Sync()
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("scenario hung")
	}
	return model, out
}

// checkAfterScenario checks the sweep's invariants: every completion
// once, no pins or waiters left, nothing dirty after a successful Sync,
// dirty data still there after a failed one, and, once the faults are
// gone, a Sync that puts the model on the device.
func checkAfterScenario(t *testing.T, r *rig, fd *faultDev, f *file, model []byte, out sweepOutcome, what string) {
	t.Helper()
	fd.settle(t)
	if out.wErr == nil && out.wrote != sweepLen {
		t.Errorf("%s: write returned %d without an error", what, out.wrote)
	}
	if out.rErr == nil && !out.readOK {
		t.Errorf("%s: read succeeded but returned wrong data", what)
	}
	if out.syncErr == nil && f.n.Dirty() {
		t.Errorf("%s: dirty after a successful Sync", what)
	}
	// A failed Sync may report a sticky error of an earlier write-back
	// (under memory pressure) whose pages its own pass then wrote: the
	// data is either still dirty or on the device, never neither.
	if out.syncErr != nil && out.wrote > 0 && !f.n.Dirty() && !bytes.Equal(r.onDisk(f), model) {
		t.Errorf("%s: Sync failed (%v) and the dirty data is neither dirty nor on the device", what, out.syncErr)
	}
	if out.syncErr == nil && out.wrote > 0 && !bytes.Equal(r.onDisk(f), model) {
		t.Errorf("%s: Sync succeeded but the device differs from the model", what)
	}
	r.checkInvariants(t)
	// With the faults cleared everything reaches the device.
	fd.set(func(f *faultDev) { f.failNth, f.failIf = 0, nil })
	r.pool.FailAfter(-1)
	r.pool.FailWhen(nil)
	if err := f.n.Sync(); err != nil {
		t.Errorf("%s: Sync after clearing faults: %v", what, err)
	}
	if !bytes.Equal(r.onDisk(f), model) {
		t.Errorf("%s: device differs from the model after recovery", what)
	}
	got := make([]byte, len(model))
	if k, err := f.n.Read(got, 0, f.size); err != nil || k != len(model) || !bytes.Equal(got, model) {
		t.Errorf("%s: read after recovery: %d, %v, equal %v", what, k, err, bytes.Equal(got, model))
	}
	fd.settle(t)
	r.checkInvariants(t)
}

// countingHook returns a pool failure hook that counts allocations and
// fails those for which fail(i) is true (i counts from 1).
func countingHook(fail func(i int) bool) (func() bool, func() int) {
	var mu sync.Mutex
	n := 0
	return func() bool {
			mu.Lock()
			defer mu.Unlock()
			n++
			return fail(n)
		}, func() int {
			mu.Lock()
			defer mu.Unlock()
			return n
		}
}

// TestFaultSweep runs the scenario once clean to count its allocations and
// device requests, then once per allocation with that one failing, once
// per allocation with it and every later one failing, and once per device
// request with that request failing; the invariants hold after each run.
// Small budgets make the scenario evict and allocate again.
func TestFaultSweep(t *testing.T) {
	for _, budget := range []int64{64 * PageSize, 4 * PageSize} {
		o := rigOpts{budget: budget}
		// Clean run: count.
		r, fd, f, model := sweepSetup(t, o)
		hook, count := countingHook(func(int) bool { return false })
		r.pool.FailWhen(hook)
		reqBase := fd.seen
		model, out := runSweepScenario(t, r, f, model)
		if out.wErr != nil || out.rErr != nil || out.syncErr != nil || !out.readOK {
			t.Fatalf("budget %d: clean run failed: %+v", budget, out)
		}
		checkAfterScenario(t, r, fd, f, model, out, "clean")
		allocs, reqs := count(), fd.seen-reqBase
		r.close()
		if allocs == 0 || reqs == 0 {
			t.Fatalf("budget %d: scenario made %d allocations and %d requests", budget, allocs, reqs)
		}
		t.Logf("budget %d pages: scenario makes %d page allocations and %d device requests", budget/PageSize, allocs, reqs)

		for i := 1; i <= allocs; i++ {
			r, fd, f, model := sweepSetup(t, o)
			hook, _ := countingHook(func(n int) bool { return n == i })
			r.pool.FailWhen(hook)
			model, out := runSweepScenario(t, r, f, model)
			checkAfterScenario(t, r, fd, f, model, out, fmt.Sprintf("budget %d, allocation %d fails", budget, i))
			r.close()
		}
		for i := 0; i <= allocs; i++ {
			r, fd, f, model := sweepSetup(t, o)
			r.pool.FailAfter(i)
			model, out := runSweepScenario(t, r, f, model)
			checkAfterScenario(t, r, fd, f, model, out, fmt.Sprintf("budget %d, allocations after %d fail", budget, i))
			r.close()
		}
		for i := 1; i <= reqs; i++ {
			r, fd, f, model := sweepSetup(t, o)
			fd.set(func(f *faultDev) { f.failNth = f.seen + i })
			model, out := runSweepScenario(t, r, f, model)
			checkAfterScenario(t, r, fd, f, model, out, fmt.Sprintf("budget %d, request %d fails", budget, i))
			r.close()
		}
	}
}

// TestFaultSweepBlockdevFaulty runs the same scenario over blockdev's own
// fault injector: each device request in turn fails, then each one in turn
// transfers only half its bytes (a device that ended early), which the
// cache must treat as an error, never as data.
func TestFaultSweepBlockdevFaulty(t *testing.T) {
	setup := func(t *testing.T) (*rig, *faultDev, *blockdev.Faulty, *file, []byte) {
		var fd *faultDev
		r := newRig(t, rigOpts{devSize: 4 << 20, budget: 8 * PageSize, wrap: func(d blockdev.Device, q *bh.Queue) blockdev.Device {
			fd = newFaultDev(q, blockdev.NewFaulty(d, q))
			return fd
		}})
		bf := fd.Device.(*blockdev.Faulty)
		model := pattern(0, 5*PageSize+1000, 1)
		f := storedFile(t, r, model)
		return r, fd, bf, f, model
	}
	r, _, bf, f, model := setup(t)
	base := bf.Submitted()
	model, out := runSweepScenario(t, r, f, model)
	if out.wErr != nil || out.rErr != nil || out.syncErr != nil || !out.readOK {
		t.Fatalf("clean run failed: %+v", out)
	}
	reqs := bf.Submitted() - base
	r.close()
	for _, short := range []bool{false, true} {
		for i := 1; i <= reqs; i++ {
			r, fd, bf, f, model := setup(t)
			what := fmt.Sprintf("request %d fails", i)
			if short {
				bf.ShortNth(bf.Submitted() + i)
				what = fmt.Sprintf("request %d is short", i)
			} else {
				bf.FailNth(bf.Submitted()+i, errInjected)
			}
			model, out := runSweepScenario(t, r, f, model)
			bf.ClearFaults()
			checkAfterScenario(t, r, fd, f, model, out, what)
			// A short read-ahead may fail unseen by any caller (the
			// page is filled again on demand), but the cache must have
			// counted it as an error, not taken it as data.
			if s := r.c.Stats(); short && s.ReadErrors+s.WriteErrors == 0 {
				t.Errorf("%s: a short transfer was not treated as an error", what)
			}
			r.close()
		}
	}
}
