package pagecache

import (
	"bytes"
	"errors"
	"syscall"
	"testing"
	"time"
)

// pattern returns n bytes that encode their file offset and a generation,
// so a misplaced or stale byte is detected.
func pattern(off int64, n int, gen byte) []byte {
	p := make([]byte, n)
	for i := range p {
		o := off + int64(i)
		p[i] = byte(o) ^ byte(o>>8)*31 ^ byte(o>>16)*7 ^ gen
	}
	return p
}

func TestWriteReadSyncRoundTrip(t *testing.T) {
	r := newRig(t, rigOpts{})
	f := r.newFile()
	// Partial head and tail, several pages, then a write inside a page.
	f.write(t, pattern(100, 3*PageSize+200, 1), 100)
	f.write(t, pattern(5000, 10, 2), 5000)
	want := make([]byte, f.size)
	copy(want[100:], pattern(100, 3*PageSize+200, 1))
	copy(want[5000:], pattern(5000, 10, 2))
	if got := f.read(t, 0, f.size+100); !bytes.Equal(got, want) {
		t.Fatalf("read back differs from what was written")
	}
	if !f.n.Dirty() {
		t.Fatalf("node not dirty after a write")
	}
	if err := f.n.Sync(); err != nil {
		t.Fatal(err)
	}
	if f.n.Dirty() {
		t.Fatalf("node dirty after a successful Sync")
	}
	if got := r.onDisk(f); !bytes.Equal(got, want) {
		t.Fatalf("device contents after Sync differ from what was written")
	}
	r.checkInvariants(t)
	// A second cache over the same device sees the data.
	c2, err := New(Config{Device: r.dev, Queue: r.q, Pool: r.pool, WritebackDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	n2 := c2.NewNode(f.b)
	p := make([]byte, f.size)
	if k, err := n2.Read(p, 0, f.size); err != nil || k != int(f.size) || !bytes.Equal(p, want) {
		t.Fatalf("fresh cache read %d, %v; equal %v", k, err, bytes.Equal(p, want))
	}
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestReadClipsAtSizeAndHolesReadZero(t *testing.T) {
	r := newRig(t, rigOpts{})
	f := r.newFile()
	f.write(t, pattern(3*PageSize, 100, 1), 3*PageSize)
	if err := f.n.Sync(); err != nil {
		t.Fatal(err)
	}
	f.n.Drop()
	f.n = r.c.NewNode(f.b)
	before := r.c.Stats().Fills
	got := f.read(t, 0, 10*PageSize)
	if int64(len(got)) != f.size {
		t.Fatalf("read %d bytes of a %d-byte file", len(got), f.size)
	}
	if !bytes.Equal(got[:3*PageSize], make([]byte, 3*PageSize)) {
		t.Fatalf("hole did not read as zeros")
	}
	if !bytes.Equal(got[3*PageSize:], pattern(3*PageSize, 100, 1)) {
		t.Fatalf("data after the hole differs")
	}
	if fills := r.c.Stats().Fills - before; fills != 1 {
		t.Fatalf("%d device reads for one data page behind a hole, want 1", fills)
	}
	if k, err := f.n.Read(make([]byte, 10), f.size, f.size); k != 0 || err != nil {
		t.Fatalf("read at EOF: %d, %v", k, err)
	}
	r.checkInvariants(t)
}

func TestWriteReserveENOSPCDirtiesNothing(t *testing.T) {
	r := newRig(t, rigOpts{})
	r.sp.limit = r.sp.next + 2 // two blocks left
	f := r.newFile()
	k, err := f.n.Write(pattern(0, 3*fakeBlock, 1), 0, 0)
	if !errors.Is(err, syscall.ENOSPC) || k != 0 {
		t.Fatalf("write beyond the space: %d, %v; want 0, ENOSPC", k, err)
	}
	if f.n.Dirty() || r.c.Stats().CachedPages != 0 {
		t.Fatalf("a refused write left pages behind")
	}
	r.checkInvariants(t)
}

func TestTruncateDropsAndZeroesTail(t *testing.T) {
	r := newRig(t, rigOpts{})
	f := r.newFile()
	f.write(t, pattern(0, 4*PageSize, 1), 0)
	f.n.Truncate(PageSize + 10)
	f.size = PageSize + 10
	if got := r.c.Stats().CachedPages; got != 2 {
		t.Fatalf("%d pages cached after truncate to 1 page + 10, want 2", got)
	}
	// Extend again: the bytes past the old truncation point read zero.
	f.write(t, []byte{7}, 3*PageSize)
	got := f.read(t, 0, f.size)
	want := make([]byte, f.size)
	copy(want, pattern(0, PageSize+10, 1))
	want[3*PageSize] = 7
	if !bytes.Equal(got, want) {
		t.Fatalf("after truncate and extend the contents differ")
	}
	if err := f.n.Sync(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.onDisk(f), want) {
		t.Fatalf("device contents differ after truncate, extend and sync")
	}
	r.checkInvariants(t)
}

func TestPunchHoleZeroesCachedBytes(t *testing.T) {
	r := newRig(t, rigOpts{})
	f := r.newFile()
	f.write(t, pattern(0, 4*PageSize, 1), 0)
	if err := f.n.Sync(); err != nil {
		t.Fatal(err)
	}
	f.b.punch(1000, 2*PageSize)
	f.n.PunchHole(1000, 2*PageSize)
	want := pattern(0, 4*PageSize, 1)
	clear(want[1000 : 1000+2*PageSize])
	if !bytes.Equal(f.read(t, 0, f.size), want) {
		t.Fatalf("cached contents after punch differ")
	}
	r.checkInvariants(t)
}

func TestDropDiscardsDirtyData(t *testing.T) {
	r := newRig(t, rigOpts{})
	f := r.newFile()
	f.write(t, pattern(0, 3*PageSize, 1), 0)
	f.n.Drop()
	if s := r.c.Stats(); s.CachedPages != 0 || s.DirtyPages != 0 {
		t.Fatalf("after Drop: %d cached, %d dirty", s.CachedPages, s.DirtyPages)
	}
	if f.b.commits != 0 {
		t.Fatalf("dropped data was written back")
	}
	if err := r.c.Sync(); err != nil {
		t.Fatal(err)
	}
	r.checkInvariants(t)
}

// Close right after a sequential read, with read-ahead still in flight,
// waits for it and hands every page back to the pool.
func TestCloseWithReadAheadInFlight(t *testing.T) {
	r, fd := faultRig(t, rigOpts{budget: 4 << 20})
	f := storedFile(t, r, pattern(0, 64*PageSize, 1))
	fd.set(func(f *faultDev) { f.maxWait = 5 * time.Millisecond })
	f.read(t, 0, 4*PageSize)
	f.read(t, 4*PageSize, 4*PageSize) // sequential: read-ahead goes out
	if r.c.Stats().ReadAheadPages == 0 {
		t.Fatal("no read-ahead was issued")
	}
	if err := r.c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := r.pool.InUse(); n != 0 {
		t.Fatalf("%d pages still taken from the pool after Close", n)
	}
	fd.settle(t)
}

// A zero Budget and WritebackDelay mean the exported defaults.
func TestConfigDefaults(t *testing.T) {
	r := newRig(t, rigOpts{})
	c, err := New(Config{Device: r.dev, Queue: r.q, Pool: r.pool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.budget != DefaultBudget/PageSize || c.delay != DefaultWritebackDelay {
		t.Errorf("budget %d pages, delay %v; want %d, %v", c.budget, c.delay, DefaultBudget/PageSize, DefaultWritebackDelay)
	}
}
