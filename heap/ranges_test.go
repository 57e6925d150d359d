package heap

import (
	"math/rand"
	"testing"
)

func mustCheck(t *testing.T, r *Ranges) {
	t.Helper()
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestRangesFirstFitAndGrow(t *testing.T) {
	r := NewRanges(5120)
	for _, x := range [][2]uint64{{0, 1}, {1, 1024}} {
		if err := r.Reserve(x[0], x[1]); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := r.Alloc(1024)
	b, _ := r.Alloc(1024)
	c, _ := r.Alloc(1)
	if a != 1025 || b != 2049 || c != 3073 {
		t.Fatalf("first fit gave %d %d %d, want 1025 2049 3073", a, b, c)
	}
	if !r.AllocAt(3074, 10) {
		t.Fatal("grow in place at 3074 refused")
	}
	if r.AllocAt(3080, 1) {
		t.Fatal("AllocAt of a used block succeeded")
	}
	if r.FreeBlocks() != 5120-1-1024-2048-11 {
		t.Fatalf("free %d", r.FreeBlocks())
	}
	mustCheck(t, r)
	if err := r.Reserve(100, 1); err == nil {
		t.Fatal("reserve over used blocks succeeded")
	}
	if err := r.Reserve(5000, 200); err == nil {
		t.Fatal("reserve past the end succeeded")
	}
	if err := r.Free(4000, 1); err == nil {
		t.Fatal("double free succeeded")
	}
	if err := r.Free(1025, 1024); err != nil {
		t.Fatal(err)
	}
	if s, ok := r.Alloc(1000); !ok || s != 1025 {
		t.Fatalf("alloc after free gave %d %v", s, ok)
	}
	if _, ok := r.Alloc(100000); ok {
		t.Fatal("oversized alloc succeeded")
	}
	var parts [][2]uint64
	r.FreeWithin(2000, 1200, func(s, n uint64) { parts = append(parts, [2]uint64{s, n}) })
	if len(parts) != 2 || parts[0] != [2]uint64{2025, 24} || parts[1] != [2]uint64{3084, 116} {
		t.Fatalf("FreeWithin gave %v", parts)
	}
	mustCheck(t, r)
}

// TestRangesRandom compares the allocator with a bitmap model through a
// random sequence of operations, checking the invariants after each.
func TestRangesRandom(t *testing.T) {
	const size = 2000
	rng := rand.New(rand.NewSource(1))
	r := NewRanges(size)
	used := make([]bool, size)
	for step := 0; step < 20000; step++ {
		start := uint64(rng.Intn(size))
		n := uint64(rng.Intn(40) + 1)
		allFree, allUsed := true, true
		for b := start; b < start+n; b++ {
			if b >= size {
				allFree, allUsed = false, false
				break
			}
			if used[b] {
				allFree = false
			} else {
				allUsed = false
			}
		}
		switch rng.Intn(4) {
		case 0:
			err := r.Reserve(start, n)
			if (err == nil) != allFree {
				t.Fatalf("step %d: reserve [%d,+%d) err=%v, model free=%v", step, start, n, err, allFree)
			}
			if err == nil {
				for b := start; b < start+n; b++ {
					used[b] = true
				}
			}
		case 1:
			err := r.Free(start, n)
			if (err == nil) != allUsed {
				t.Fatalf("step %d: free [%d,+%d) err=%v, model used=%v", step, start, n, err, allUsed)
			}
			if err == nil {
				for b := start; b < start+n; b++ {
					used[b] = false
				}
			}
		case 2:
			s, ok := r.Alloc(n)
			want, wok := uint64(0), false
			for b := uint64(0); b+n <= size && !wok; b++ {
				f := true
				for k := b; k < b+n; k++ {
					if used[k] {
						f = false
						b = k
						break
					}
				}
				if f {
					want, wok = b, true
				}
			}
			if ok != wok || s != want {
				t.Fatalf("step %d: alloc %d gave %d,%v want %d,%v", step, n, s, ok, want, wok)
			}
			if ok {
				for b := s; b < s+n; b++ {
					used[b] = true
				}
			}
		case 3:
			ok := r.AllocAt(start, n)
			if ok != allFree {
				t.Fatalf("step %d: allocAt [%d,+%d) %v, model %v", step, start, n, ok, allFree)
			}
			if ok {
				for b := start; b < start+n; b++ {
					used[b] = true
				}
			}
		}
		mustCheck(t, r)
		var free uint64
		for _, u := range used {
			if !u {
				free++
			}
		}
		if free != r.FreeBlocks() {
			t.Fatalf("step %d: free %d, model %d", step, r.FreeBlocks(), free)
		}
	}
}
