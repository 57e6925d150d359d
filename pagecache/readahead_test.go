package pagecache

import (
	"bytes"
	"testing"
)

// Four readers streaming through four quarters of one file, their reads
// interleaved, each keep a read-ahead window: the device sees few large
// reads, not one per read call.
func TestReadAheadFollowsInterleavedStreams(t *testing.T) {
	r, fd := faultRig(t, rigOpts{budget: 4 << 20})
	const pages = 512
	data := pattern(0, pages*PageSize, 1)
	f := storedFile(t, r, data)
	const step = 2 * PageSize
	quarter := int64(pages / 4 * PageSize)
	got := make([][]byte, 4)
	for off := int64(0); off < quarter; off += step {
		for k := int64(0); k < 4; k++ {
			got[k] = append(got[k], f.read(t, k*quarter+off, step)...)
		}
	}
	if !bytes.Equal(bytes.Join(got, nil), data) {
		t.Fatal("interleaved sequential reads differ")
	}
	s := r.c.Stats()
	rd, _ := countOps(fd)
	if s.ReadAheadPages < pages/2 || rd > 40 {
		t.Fatalf("4 interleaved streams over %d pages in 2-page steps: %d read-ahead pages, %d device reads", pages, s.ReadAheadPages, rd)
	}
	t.Logf("%d device reads, %d read-ahead pages, %d hits", rd, s.ReadAheadPages, s.Hits)
	fd.settle(t)
	r.checkInvariants(t)
}
