package heap

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

func TestPagePoolAlignmentAdjacencyAndSlabs(t *testing.T) {
	p := NewPagePool(PoolConfig{Budget: 4 << 20})
	defer p.Close()
	if p.MaxSlabs() != 2 {
		t.Fatalf("MaxSlabs = %d, want 2", p.MaxSlabs())
	}
	var pages [][]byte
	for i := 0; i < 3; i++ {
		b, err := p.Alloc()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != PageSize || cap(b) != PageSize || addr(b)%PageSize != 0 {
			t.Fatalf("page %d: len %d cap %d addr %#x", i, len(b), cap(b), addr(b))
		}
		pages = append(pages, b)
	}
	if addr(pages[1]) != addr(pages[0])+PageSize || addr(pages[2]) != addr(pages[1])+PageSize {
		t.Fatal("consecutive allocations from a fresh slab are not adjacent")
	}
	idx, ok := p.SlabIndex(pages[1])
	slabs := p.Slabs()
	if !ok || addr(slabs[idx])%SlabSize != 0 || addr(pages[1])-addr(slabs[idx]) != PageSize {
		t.Fatalf("SlabIndex %d %v", idx, ok)
	}
	if _, ok := p.SlabIndex(make([]byte, PageSize)); ok {
		t.Fatal("Go memory reported as a slab")
	}
	for _, b := range pages {
		b[0], b[PageSize-1] = 1, 2 // the memory is usable
		p.Free(b)
	}
	if p.InUse() != 0 || p.HighWater() != 3 {
		t.Fatalf("InUse %d HighWater %d", p.InUse(), p.HighWater())
	}
}

func TestPagePoolBudgetAndFailureInjection(t *testing.T) {
	p := NewPagePool(PoolConfig{Budget: 3 * PageSize})
	defer p.Close()
	var got [][]byte
	for i := 0; i < 3; i++ {
		b, err := p.Alloc()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b)
	}
	if _, err := p.Alloc(); !errors.Is(err, ErrNoMemory) {
		t.Fatalf("alloc over budget: %v", err)
	}
	p.Free(got[0])
	p.FailAfter(0)
	if _, err := p.Alloc(); !errors.Is(err, ErrNoMemory) {
		t.Fatalf("FailAfter(0): %v", err)
	}
	p.FailAfter(-1)
	b, err := p.Alloc()
	if err != nil {
		t.Fatal(err)
	}
	got[0] = b
	for _, b := range got {
		p.Free(b)
	}
	p.FailAfter(2)
	a1, e1 := p.Alloc()
	a2, e2 := p.Alloc()
	_, e3 := p.Alloc()
	if e1 != nil || e2 != nil || !errors.Is(e3, ErrNoMemory) {
		t.Fatalf("FailAfter(2): %v %v %v", e1, e2, e3)
	}
	p.Free(a1)
	p.Free(a2)
	p.FailAfter(-1)
	calls := 0
	p.FailWhen(func() bool { calls++; return calls%2 == 0 })
	b1, e1 := p.Alloc()
	_, e2 = p.Alloc()
	if e1 != nil || !errors.Is(e2, ErrNoMemory) {
		t.Fatalf("FailWhen: %v %v", e1, e2)
	}
	p.Free(b1)
	p.FailWhen(nil)
}

// AllocN hands out pages as that many Allocs would: it stops short at the
// budget or an injected failure, and fails only when it got nothing.
func TestPagePoolAllocN(t *testing.T) {
	p := NewPagePool(PoolConfig{Budget: 5 * PageSize})
	defer p.Close()
	bufs, err := p.AllocN(nil, 3)
	if err != nil || len(bufs) != 3 {
		t.Fatalf("AllocN(3): %d pages, %v", len(bufs), err)
	}
	bufs, err = p.AllocN(bufs, 4) // 2 left in the budget
	if err != nil || len(bufs) != 5 || p.InUse() != 5 {
		t.Fatalf("AllocN(4) with 2 left: %d pages (%d in use), %v", len(bufs), p.InUse(), err)
	}
	if more, err := p.AllocN(bufs, 1); !errors.Is(err, ErrNoMemory) || len(more) != 5 {
		t.Fatalf("AllocN over budget: %d pages, %v", len(more), err)
	}
	seen := map[*byte]bool{}
	for _, b := range bufs {
		if len(b) != PageSize || seen[&b[0]] {
			t.Fatalf("AllocN returned a bad or repeated page")
		}
		seen[&b[0]] = true
		p.Free(b)
	}
	p.FailAfter(2)
	bufs, err = p.AllocN(nil, 4)
	if err != nil || len(bufs) != 2 {
		t.Fatalf("AllocN with a failure after 2: %d pages, %v", len(bufs), err)
	}
	if _, err := p.AllocN(nil, 4); !errors.Is(err, ErrNoMemory) {
		t.Fatalf("AllocN failing at once: %v", err)
	}
	p.FailAfter(-1)
	for _, b := range bufs {
		p.Free(b)
	}
	if p.InUse() != 0 {
		t.Fatalf("%d pages in use", p.InUse())
	}
}

func TestPagePoolReturnsIdleSlabs(t *testing.T) {
	p := NewPagePool(PoolConfig{Budget: 8 << 20, KeepIdle: 1})
	defer p.Close()
	var mapped, unmapped int
	cancel := p.Watch(func(idx int, mem []byte) {
		if mem == nil {
			unmapped++
		} else {
			mapped++
		}
	})
	defer cancel()
	var pages [][]byte
	for i := 0; i < 3*pagesPerSlab; i++ {
		b, err := p.Alloc()
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, b)
	}
	if p.MappedSlabs() != 3 || mapped != 3 {
		t.Fatalf("mapped %d slabs (watched %d), want 3", p.MappedSlabs(), mapped)
	}
	for _, b := range pages {
		p.Free(b)
	}
	if p.MappedSlabs() != 1 || unmapped != 2 {
		t.Fatalf("after freeing all: %d slabs mapped, %d unmapped; want 1 kept idle", p.MappedSlabs(), unmapped)
	}
	p.Trim()
	if p.MappedSlabs() != 0 || unmapped != 3 {
		t.Fatalf("after Trim: %d mapped", p.MappedSlabs())
	}
	if _, err := p.Alloc(); err != nil {
		t.Fatal(err)
	}
}

func TestPagePoolLeakReportAndMisuse(t *testing.T) {
	p := NewPagePool(PoolConfig{Budget: 1 << 20})
	b, _ := p.Alloc()
	leaked, _ := p.Alloc()
	p.Free(b)
	mustPanic(t, "double free", func() { p.Free(b) })
	mustPanic(t, "not a page of this pool", func() { p.Free(make([]byte, PageSize)) })
	err := p.Close()
	if err == nil || !strings.Contains(err.Error(), "1 pages leaked") {
		t.Fatalf("Close: %v", err)
	}
	if debugBuild && !strings.Contains(err.Error(), "pages_test.go") {
		t.Fatalf("debug leak report lacks the allocation site: %v", err)
	}
	if _, err := p.Alloc(); !errors.Is(err, ErrNoMemory) {
		t.Fatalf("Alloc after Close: %v", err)
	}
	// The leaked page is still memory; freeing it late releases its slab.
	leaked[0] = 1
	p.Free(leaked)
	if p.MappedSlabs() != 0 {
		t.Fatalf("%d slabs mapped after the last late Free", p.MappedSlabs())
	}
}

func mustPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		r := recover()
		if r == nil || !strings.Contains(r.(string), want) {
			t.Fatalf("panic %v, want one mentioning %q", r, want)
		}
	}()
	f()
}

// TestPagePoolConcurrent allocates and frees from many goroutines, writing
// each page's owner into it and checking nobody else did meanwhile.
func TestPagePoolConcurrent(t *testing.T) {
	p := NewPagePool(PoolConfig{Budget: 2 << 20})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g byte) {
			defer wg.Done()
			var mine [][]byte
			for i := 0; i < 2000; i++ {
				if b, err := p.Alloc(); err == nil {
					for j := range b {
						b[j] = g
					}
					mine = append(mine, b)
				}
				if len(mine) > 40 || (len(mine) > 0 && i%3 == 0) {
					b := mine[0]
					mine = mine[1:]
					for j := range b {
						if b[j] != g {
							t.Errorf("page owned by %d overwritten with %d", g, b[j])
							return
						}
					}
					p.Free(b)
				}
			}
			for _, b := range mine {
				p.Free(b)
			}
		}(byte(g))
	}
	wg.Wait()
	if p.HighWater() > p.Budget() {
		t.Fatalf("high water %d over budget %d", p.HighWater(), p.Budget())
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}
