//go:build tfsdebug

package heap

import (
	"fmt"
	"runtime"
	"strings"
)

// slabMap takes the slab from Go memory in the debug build, so the race
// detector (which ignores mmap'd memory) checks accesses to page contents.
// It over-allocates to find a SlabSize-aligned window; the Go heap never
// moves objects, so the window stays put while the slab is referenced.
func slabMap() ([]byte, error) {
	raw := make([]byte, 2*SlabSize)
	skip := int((SlabSize - base(raw)%SlabSize) % SlabSize)
	return raw[skip : skip+SlabSize : skip+SlabSize], nil
}

func slabUnmap([]byte) {}

// slabPopulate has nothing to do: Go memory is zeroed when made.
func slabPopulate([]byte) {}

// slabOwner remembers where each allocated page was allocated, for the
// leak report, and poisons freed pages so stale readers see garbage.
type slabOwner struct {
	sites map[int]string
}

func (o *slabOwner) allocated(pg int) {
	if o.sites == nil {
		o.sites = map[int]string{}
	}
	// The site is the first caller that is not a PagePool method (Alloc
	// and AllocN reach here through different depths).
	site := "unknown"
	for skip := 2; skip < 8; skip++ {
		pc, file, line, ok := runtime.Caller(skip)
		if !ok {
			break
		}
		if f := runtime.FuncForPC(pc); f != nil && strings.HasPrefix(f.Name(), "github.com/tfsmount/tfsmount/heap.(*PagePool)") {
			continue
		}
		site = fmt.Sprintf("%s:%d", file, line)
		break
	}
	o.sites[pg] = site
}

func (o *slabOwner) freed(pg int, mem []byte) {
	delete(o.sites, pg)
	for i := range mem {
		mem[i] = 0xdb
	}
}

func (o *slabOwner) report(slab, used int, allocated *[pagesPerSlab / 64]uint64) string {
	s := leakSummary(slab, used, allocated)
	n := 0
	for pg, site := range o.sites {
		if n == 4 {
			s += " ..."
			break
		}
		s += fmt.Sprintf(" [page %d from %s]", pg, site)
		n++
	}
	return s
}

// debugBuild is true in the tfsdebug build.
const debugBuild = true
