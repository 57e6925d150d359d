package pagecache

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/blockdev"
)

// countOps returns how many reads and writes fd has seen.
func countOps(fd *faultDev) (reads, writes int) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	return fd.reads, fd.writes
}

// A cold read of contiguous missing pages is one device request, and so is
// the write-back of contiguous dirty pages (one PrepareWrite, one
// CommitWrite).
func TestContiguousPagesMergeIntoOneRequest(t *testing.T) {
	r, fd := faultRig(t, rigOpts{budget: 4 << 20})
	f := r.newFile()
	data := pattern(0, 64*PageSize, 1)
	f.write(t, data, 0)
	if err := f.n.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, w := countOps(fd); w != 1 || f.b.commits != 1 {
		t.Fatalf("write-back of 64 contiguous dirty pages: %d device writes, %d commits; want 1 and 1", w, f.b.commits)
	}
	f.n.Drop()
	f.n = r.c.NewNode(f.b)
	if got := f.read(t, 0, f.size); !bytes.Equal(got, data) {
		t.Fatal("read back differs")
	}
	if rd, _ := countOps(fd); rd != 1 {
		t.Fatalf("cold read of 64 contiguous pages took %d device reads, want 1", rd)
	}
	r.checkInvariants(t)
}

// Segments that are not contiguous on the device become one request each,
// and a page split across segments is still filled correctly.
func TestScatteredExtentsFillCorrectly(t *testing.T) {
	r, fd := faultRig(t, rigOpts{})
	r.sp.scatter = true
	f := r.newFile()
	data := pattern(0, 3*PageSize+700, 1)
	f.write(t, data, 0)
	if err := f.n.Sync(); err != nil {
		t.Fatal(err)
	}
	f.n.Drop()
	f.n = r.c.NewNode(f.b)
	if got := f.read(t, 0, f.size); !bytes.Equal(got, data) {
		t.Fatal("read back over scattered blocks differs")
	}
	blocks := (f.size + fakeBlock - 1) / fakeBlock
	if rd, _ := countOps(fd); int64(rd) != blocks {
		t.Fatalf("%d device reads for %d scattered blocks", rd, blocks)
	}
	r.checkInvariants(t)
}

// Whole-page writes never read; a partial write past EOF or over a hole
// does no device read either; a partial write over data does one.
func TestWritesReadOnlyWhenNeeded(t *testing.T) {
	r, fd := faultRig(t, rigOpts{})
	f := storedFile(t, r, pattern(0, 4*PageSize, 1))
	base, _ := countOps(fd)
	f.write(t, pattern(PageSize, 2*PageSize, 2), PageSize)   // whole pages
	f.write(t, pattern(5*PageSize+10, 10, 3), 5*PageSize+10) // past EOF
	if rd, _ := countOps(fd); rd != base {
		t.Fatalf("whole-page and past-EOF writes read the device %d times", rd-base)
	}
	g := storedFile(t, r, nil)
	g.size = 8 * PageSize // a file of holes
	g.write(t, []byte("x"), 3*PageSize+5)
	if rd, _ := countOps(fd); rd != base {
		t.Fatalf("a partial write over a hole read the device")
	}
	f.write(t, []byte("y"), 3*PageSize+5) // over data: RMW
	if rd, _ := countOps(fd); rd != base+1 {
		t.Fatalf("a partial write over data read the device %d times, want 1", rd-base)
	}
	want := pattern(0, 4*PageSize, 1)
	copy(want[PageSize:], pattern(PageSize, 2*PageSize, 2))
	want[3*PageSize+5] = 'y'
	want = append(want, make([]byte, PageSize+20)...)
	copy(want[5*PageSize+10:], pattern(5*PageSize+10, 10, 3))
	if got := f.read(t, 0, f.size); !bytes.Equal(got, want) {
		t.Fatal("contents differ")
	}
	r.checkInvariants(t)
}

// A sequential reader gets read-ahead that grows; the pages it reads next
// are already there.
func TestReadAheadGrowsOnSequentialReads(t *testing.T) {
	r, fd := faultRig(t, rigOpts{budget: 4 << 20})
	data := pattern(0, 256*PageSize, 1)
	f := storedFile(t, r, data)
	got := make([]byte, 0, len(data))
	for off := int64(0); off < f.size; off += 2 * PageSize {
		got = append(got, f.read(t, off, 2*PageSize)...)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("sequential read differs")
	}
	s := r.c.Stats()
	rd, _ := countOps(fd)
	if s.ReadAheadPages < 128 || rd > 20 {
		t.Fatalf("sequential read of 256 pages in 2-page steps: %d read-ahead pages, %d device reads", s.ReadAheadPages, rd)
	}
	t.Logf("%d device reads, %d read-ahead pages, %d hits", rd, s.ReadAheadPages, s.Hits)
	// Random reads get none.
	g := storedFile(t, r, data)
	before := r.c.Stats().ReadAheadPages
	for _, pg := range []int64{100, 7, 200, 50, 150} {
		g.read(t, pg*PageSize, 100)
	}
	if ra := r.c.Stats().ReadAheadPages - before; ra != 0 {
		t.Fatalf("random reads triggered %d read-ahead pages", ra)
	}
	fd.settle(t)
	r.checkInvariants(t)
}

// The timer writes back dirty data older than the delay, and only that.
func TestTimerWritesBackOldDirtyData(t *testing.T) {
	r := newRig(t, rigOpts{delay: 20 * time.Millisecond})
	f := r.newFile()
	f.write(t, pattern(0, 3*PageSize, 1), 0)
	if f.b.commits != 0 {
		t.Fatal("written back at once")
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.n.Dirty() {
		if time.Now().After(deadline) {
			t.Fatal("the timer never wrote the data back")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if !bytes.Equal(r.onDisk(f), pattern(0, 3*PageSize, 1)) {
		t.Fatal("device contents differ after timer write-back")
	}
}

// Writing more than the budget works: dirty pages are written back to make
// room, and everything ends up on the device.
func TestWritesLargerThanBudgetWriteBackUnderPressure(t *testing.T) {
	r := newRig(t, rigOpts{budget: 8 * PageSize})
	f := r.newFile()
	data := pattern(0, 100*PageSize+123, 1)
	for off := 0; off < len(data); off += 3*PageSize + 17 {
		end := min(len(data), off+3*PageSize+17)
		f.write(t, data[off:end], int64(off))
	}
	if s := r.c.Stats(); s.CachedPages > 8 || s.WritebackPages == 0 {
		t.Fatalf("budget of 8 pages: %d cached, %d written back", s.CachedPages, s.WritebackPages)
	}
	if got := f.read(t, 0, f.size); !bytes.Equal(got, data) {
		t.Fatal("read back differs")
	}
	if err := r.c.Sync(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.onDisk(f), data) {
		t.Fatal("device differs")
	}
	r.checkInvariants(t)
}

// A failed PrepareWrite (the filesystem cannot place the data) keeps the
// pages dirty and reports the error at Sync, and CommitWrite is not
// called for a range that was never prepared.
func TestPrepareWriteErrorKeepsDataDirty(t *testing.T) {
	r := newRig(t, rigOpts{})
	f := r.newFile()
	f.write(t, pattern(0, 2*PageSize, 1), 0)
	f.b.prepareErr = func(off, n int64) error { return errInjected }
	if err := f.n.Sync(); !errors.Is(err, errInjected) {
		t.Fatalf("Sync with failing PrepareWrite: %v", err)
	}
	if !f.n.Dirty() || f.b.commits != 0 {
		t.Fatalf("dirty %v, %d commits after a failed PrepareWrite", f.n.Dirty(), f.b.commits)
	}
	f.b.mu.Lock()
	f.b.prepareErr = nil
	f.b.mu.Unlock()
	if err := f.n.Sync(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.onDisk(f), pattern(0, 2*PageSize, 1)) {
		t.Fatal("device differs")
	}
	r.checkInvariants(t)
}

// A hostile mapping (segments that do not cover the range) fails the fill
// with an error instead of reading into the wrong bytes.
func TestBadSegmentsAreRejected(t *testing.T) {
	r := newRig(t, rigOpts{})
	f := storedFile(t, r, pattern(0, PageSize, 1))
	f.b.mapErr = nil
	bad := &badBacking{fakeBacking: f.b}
	n := r.c.NewNode(bad)
	_, err := n.Read(make([]byte, 100), 0, f.size)
	if err == nil {
		t.Fatal("a read over a mapping with a gap succeeded")
	}
	r.checkInvariants(t)
}

type badBacking struct{ *fakeBacking }

func (b *badBacking) Map(off, n int64) ([]Segment, error) {
	return []Segment{{Off: off + 512, Len: n - 512, Dev: 4096}}, nil
}

// Requests issued by the cache are sector-aligned even when the file ends
// mid-sector.
func TestRequestsAreSectorAligned(t *testing.T) {
	r, fd := faultRig(t, rigOpts{})
	var misaligned int
	fd.set(func(f *faultDev) {
		f.failIf = func(q *blockdev.Request) bool {
			if q.Off%512 != 0 || q.Len()%512 != 0 {
				misaligned++
			}
			return false
		}
	})
	f := storedFile(t, r, pattern(0, 2*PageSize+77, 1))
	f.read(t, 0, f.size)
	f.write(t, []byte("abc"), f.size)
	if err := f.n.Sync(); err != nil {
		t.Fatal(err)
	}
	fd.set(func(*faultDev) {})
	if misaligned != 0 {
		t.Fatalf("%d requests not aligned to 512 bytes", misaligned)
	}
	want := append(pattern(0, 2*PageSize+77, 1), "abc"...)
	if !bytes.Equal(r.onDisk(f), want) {
		t.Fatal("device differs")
	}
}

// Eviction takes the least recently used clean pages first, and never
// dirty ones.
func TestEvictionIsLRUAndSparesDirtyPages(t *testing.T) {
	const budget = 32
	r := newRig(t, rigOpts{budget: budget * PageSize})
	a := storedFile(t, r, pattern(0, 24*PageSize, 1))
	a.read(t, 0, a.size) // pages 0..23 cached, oldest first
	for pg := int64(0); pg < 8; pg++ {
		a.read(t, pg*PageSize, 10) // 0..7 become the youngest
	}
	d := r.newFile()
	d.write(t, pattern(0, 8*PageSize, 2), 0) // 8 dirty pages: the cache is full
	b := storedFile(t, r, pattern(0, 8*PageSize, 3))
	for pg := int64(0); pg < 8; pg++ {
		b.read(t, pg*PageSize, 10) // one page at a time, no read-ahead into a
	}
	cached := func(f *file, pg int64) bool {
		f.n.lock()
		defer f.n.unlock()
		return f.n.pages[pg] != nil
	}
	for pg := int64(0); pg < 8; pg++ {
		if !cached(a, pg) {
			t.Errorf("recently used page %d of a was evicted", pg)
		}
		if !cached(d, pg) {
			t.Errorf("dirty page %d was evicted", pg)
		}
	}
	evicted := 0
	for pg := int64(8); pg < 24; pg++ {
		if !cached(a, pg) {
			evicted++
		}
	}
	if evicted < 8 {
		t.Errorf("only %d of the 16 least recently used pages were evicted to make room for 8", evicted)
	}
	if !d.n.Dirty() || r.c.Stats().CachedPages > budget {
		t.Errorf("dirty %v, %d pages cached of %d", d.n.Dirty(), r.c.Stats().CachedPages, budget)
	}
	r.checkInvariants(t)
}
