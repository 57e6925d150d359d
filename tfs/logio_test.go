package tfs

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/blockdev"
)

// gatedDevice holds the requests of one kind until released, so a test can
// act while a log write or a device flush is in flight. A released request
// fails with failWith when it is set.
type gatedDevice struct {
	blockdev.Device
	op       blockdev.Op
	mu       sync.Mutex
	gated    bool
	held     []*blockdev.Request
	heldSig  chan struct{} // receives a value per held request
	failWith error
}

func newGatedDevice(inner blockdev.Device, op blockdev.Op) *gatedDevice {
	return &gatedDevice{Device: inner, op: op, heldSig: make(chan struct{}, 1<<16)}
}

func (g *gatedDevice) Submit(r *blockdev.Request) {
	g.mu.Lock()
	if g.gated && r.Op == g.op {
		g.held = append(g.held, r)
		g.mu.Unlock()
		g.heldSig <- struct{}{}
		return
	}
	g.mu.Unlock()
	g.Device.Submit(r)
}

func (g *gatedDevice) gate() { g.mu.Lock(); g.gated = true; g.mu.Unlock() }

// release lets the held requests and later ones through; with err they
// fail instead of reaching the device.
func (g *gatedDevice) release(err error) {
	g.mu.Lock()
	held := g.held
	g.held, g.gated = nil, false
	g.mu.Unlock()
	for _, r := range held {
		if err != nil {
			go r.Done(0, err)
		} else {
			g.Device.Submit(r)
		}
	}
}

func (g *gatedDevice) waitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-g.heldSig:
	case <-time.After(30 * time.Second):
		t.Fatal("no request reached the gate")
	}
}

// within fails the test if f has not returned after a generous limit: a
// liveness check (f must not wait for the gated request), not a speed one.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s waited for a device request in progress", what)
	}
}

// An fsync whose device flush is slow must not stall file I/O or metadata
// changes on other files: fs.mu is not held across log writes and
// device flushes.
func TestFileIOWhileDeviceFlushes(t *testing.T) {
	mem := newVolume(t, 16<<20, "")
	q := testQueue(t)
	dev := newGatedDevice(mem, blockdev.OpFlush)
	fs := mountMem(t, dev, Options{Queue: q, WritebackDelay: time.Hour})
	a := mk(t)(fs.Create(fs.Root(), "a", true))
	b := mk(t)(fs.Create(fs.Root(), "b", true))
	dataA, dataB := pattern(1, 200000), pattern(2, 100000)
	writeAll(t, fs, a, dataA, 0)
	writeAll(t, fs, b, dataB, 0)

	dev.gate()
	synced := make(chan error, 1)
	go func() { synced <- fs.Fsync(a, false) }()
	dev.waitHeld(t)

	more := pattern(3, 50000)
	within(t, "a write, a read and a create", func() {
		writeAll(t, fs, b, more, int64(len(dataB)))
		got := make([]byte, len(dataB)+len(more))
		if n, err := fs.Read(b, got, 0); err != nil || n != len(got) {
			t.Errorf("read b: %d, %v", n, err)
		}
		if _, err := fs.Create(fs.Root(), "c", true); err != nil {
			t.Errorf("create c: %v", err)
		}
	})
	dev.release(nil)
	must(t, <-synced)
	must(t, fs.Close())

	fs = mountMem(t, mem, Options{Queue: q})
	defer fs.Close()
	checkContent(t, fs, "/a", dataA)
	checkContent(t, fs, "/b", append(dataB, more...))
	mk(t)(fs.Resolve("/c"))
}

// Records staged while a log write is in flight, enough to move the log
// into new extensions, survive that write failing: the failed batch is
// merged back and written, in order, by the next sync.
func TestLogWriteFailsWhileStaging(t *testing.T) {
	mem := newVolume(t, 32<<20, "")
	q := testQueue(t)
	dev := newGatedDevice(mem, blockdev.OpWrite)
	fs := mountMem(t, dev, Options{Queue: q, WritebackDelay: time.Hour})
	d := mk(t)(fs.Mkdir(fs.Root(), "d"))
	name := func(i int) string { return fmt.Sprintf("a-directory-with-a-longish-name-%05d", i) }
	for i := 0; i < 100; i++ {
		mk(t)(fs.Mkdir(d, name(i)))
	}
	dev.gate()
	synced := make(chan error, 1)
	go func() { synced <- fs.Sync() }()
	dev.waitHeld(t)
	const total = 12000 // more than an extension's worth of records
	within(t, "staging while the log write is held", func() {
		for i := 100; i < total; i++ {
			mk(t)(fs.Mkdir(d, name(i)))
		}
	})
	injected := errors.New("injected log write error")
	dev.release(injected)
	if err := <-synced; !errors.Is(err, injected) {
		t.Fatalf("sync: %v, want the injected error", err)
	}
	must(t, fs.Sync())
	must(t, fs.Close())

	rep, err := Fsck(mem, Options{})
	must(t, err)
	if !rep.Clean() {
		t.Fatalf("fsck: %s", rep)
	}
	fs = mountMem(t, mem, Options{Queue: q})
	defer fs.Close()
	if len(fs.log.Exts) < 3 {
		t.Fatalf("log has %d extensions; the test wants the staging to cross into new ones", len(fs.log.Exts))
	}
	ents, err := fs.ReadDir(mk(t)(fs.Resolve("/d")))
	must(t, err)
	if len(ents) != total {
		t.Fatalf("%d entries after the retried write, want %d", len(ents), total)
	}
}
