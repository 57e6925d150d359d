package heap

import (
	"testing"
	"time"
)

// spareState reads the spare count and the mapped slab count.
func spareState(p *PagePool) (spares, mapped int, preparing bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.slabs {
		if s != nil {
			mapped++
		}
	}
	return len(p.spare), mapped, p.preparing
}

// After a slab is mapped, slabs are made ready in the background (up to
// maxSpares, and never more than the budget has room for), the next slab
// mapped is one of them, and Close and Trim give them back.
func TestPagePoolPreparesSpareSlabs(t *testing.T) {
	const slabs = 3
	p := NewPagePool(PoolConfig{Budget: slabs * SlabSize})
	var maps int
	cancel := p.Watch(func(idx int, mem []byte) {
		if mem != nil {
			maps++
		}
	})
	defer cancel()
	var pages [][]byte
	alloc := func(n int) {
		for i := 0; i < n; i++ {
			b, err := p.Alloc()
			if err != nil {
				t.Fatal(err)
			}
			pages = append(pages, b)
		}
	}
	waitSpares := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			spares, mapped, preparing := spareState(p)
			if spares+mapped > slabs {
				t.Fatalf("%d spares and %d mapped slabs exceed the %d the budget allows", spares, mapped, slabs)
			}
			if spares == want && !preparing {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after 10s: %d spares (preparing %v), want %d", spares, preparing, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	alloc(1)
	waitSpares(slabs - 1) // room for two more slabs: both made ready
	alloc(pagesPerSlab)   // fills the first slab, takes one spare
	waitSpares(1)
	if maps != 2 {
		t.Fatalf("%d slabs mapped, want 2", maps)
	}
	for i, b := range pages {
		b[0] = byte(i) // spare memory is usable page memory
	}
	alloc(pagesPerSlab) // the last slab: no spare left, none made
	waitSpares(0)
	alloc(pagesPerSlab - 1) // the whole budget
	if _, err := p.Alloc(); err == nil {
		t.Fatal("allocation past the budget succeeded")
	}
	for _, b := range pages {
		p.Free(b)
	}
	p.Trim()
	if spares, mapped, _ := spareState(p); spares != 0 || mapped != 0 {
		t.Fatalf("after Trim: %d spares, %d mapped", spares, mapped)
	}
	alloc(1)
	waitSpares(slabs - 1)
	p.Free(pages[len(pages)-1])
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if spares, _, _ := spareState(p); spares != 0 {
		t.Fatalf("%d spares left after Close", spares)
	}
}
