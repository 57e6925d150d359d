//go:build !tfsdebug

package heap

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// slabMap maps one SlabSize-aligned anonymous slab outside the Go heap:
// it maps twice the size and unmaps the unaligned head and tail.
func slabMap() ([]byte, error) {
	raw, err := unix.MmapPtr(-1, 0, nil, 2*SlabSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	start := uintptr(raw)
	aligned := (start + SlabSize - 1) &^ (SlabSize - 1)
	if head := aligned - start; head > 0 {
		unix.MunmapPtr(raw, head)
	}
	if tail := start + 2*SlabSize - (aligned + SlabSize); tail > 0 {
		unix.MunmapPtr(unsafe.Add(raw, aligned+SlabSize-start), tail)
	}
	mem := unsafe.Slice((*byte)(unsafe.Add(raw, aligned-start)), SlabSize)
	// Huge pages are a hint; the slab works without them.
	_ = unix.Madvise(mem, unix.MADV_HUGEPAGE)
	return mem, nil
}

// slabPopulate faults every page of a fresh slab in (the kernel zeroes
// them now, not at first use). Failure only means the pages fault in later.
func slabPopulate(mem []byte) {
	if unix.Madvise(mem, unix.MADV_POPULATE_WRITE) == nil {
		return
	}
	for off := 0; off < len(mem); off += PageSize {
		mem[off] = 0
	}
}

func slabUnmap(mem []byte) {
	if err := unix.MunmapPtr(unsafe.Pointer(&mem[0]), uintptr(len(mem))); err != nil {
		panic("page heap: munmap slab: " + err.Error())
	}
}

// slabOwner records nothing in release builds.
type slabOwner struct{}

func (slabOwner) allocated(int)     {}
func (slabOwner) freed(int, []byte) {}

func (slabOwner) report(slab, used int, allocated *[pagesPerSlab / 64]uint64) string {
	return leakSummary(slab, used, allocated)
}

// debugBuild is true in the tfsdebug build.
const debugBuild = false
