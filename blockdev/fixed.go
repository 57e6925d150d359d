package blockdev

import (
	"fmt"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tfsmount/tfsmount/heap"
)

// fixedBuffers mirrors the page heap's slabs in the ring's registered
// buffer table (index = slab index), so that a run of page buffers inside
// one slab goes out as one READ_FIXED/WRITE_FIXED without the kernel
// pinning pages per request.
//
// The table is registered sparse and updated as the heap maps and unmaps
// slabs (heap.PagePool.Watch). A slab is only unmapped when none of its
// pages is allocated, so no request in flight can refer to it.
type fixedBuffers struct {
	r      *ring
	pool   *heap.PagePool
	cancel func()
	mu     sync.RWMutex
	byBase map[uintptr]int // slab base address -> registered index
}

func registerPool(r *ring, pool *heap.PagePool) (*fixedBuffers, error) {
	reg := rsrcRegister{nr: uint32(pool.MaxSlabs()), flags: rsrcRegisterSparse}
	if err := r.register(registerBuffers2, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return nil, fmt.Errorf("register %d sparse buffers: %w", reg.nr, err)
	}
	fb := &fixedBuffers{r: r, pool: pool, byBase: map[uintptr]int{}}
	fb.cancel = pool.Watch(fb.slabChanged)
	return fb, nil
}

// slabChanged is the heap's notice that slab idx now holds mem (mapped) or
// nothing (mem == nil, about to be unmapped). A failed registration only
// means that slab's buffers use READV/WRITEV.
func (fb *fixedBuffers) slabChanged(idx int, mem []byte) {
	var iov unix.Iovec
	if mem != nil {
		iov.Base = &mem[0]
		iov.SetLen(len(mem))
	}
	up := rsrcUpdate2{offset: uint32(idx), data: uint64(uintptr(unsafe.Pointer(&iov))), nr: 1}
	fb.mu.Lock()
	defer fb.mu.Unlock()
	for base, i := range fb.byBase {
		if i == idx {
			delete(fb.byBase, base)
		}
	}
	if err := fb.r.register(registerBuffersUpdate, unsafe.Pointer(&up), unsafe.Sizeof(up)); err != nil || mem == nil {
		return
	}
	fb.byBase[uintptr(unsafe.Pointer(&mem[0]))] = idx
}

// index is the registered index of the slab holding b, or -1.
func (fb *fixedBuffers) index(b []byte) int {
	if fb == nil || len(b) == 0 {
		return -1
	}
	base := uintptr(unsafe.Pointer(&b[0])) &^ (heap.SlabSize - 1)
	fb.mu.RLock()
	idx, ok := fb.byBase[base]
	fb.mu.RUnlock()
	if !ok {
		return -1
	}
	return idx
}

// run is how many leading buffers of bufs lie back to back inside one
// registered slab (0 if the first is not in one). Adjacent page buffers
// (the heap hands out neighbours for sequential fills) so become one op.
func (fb *fixedBuffers) run(bufs [][]byte) int {
	if fb == nil || fb.index(bufs[0]) < 0 {
		return 0
	}
	start := uintptr(unsafe.Pointer(&bufs[0][0]))
	base := start &^ (heap.SlabSize - 1)
	end := start + uintptr(len(bufs[0]))
	if (end-1)&^(heap.SlabSize-1) != base {
		return 0 // the buffer runs past its slab
	}
	n := 1
	for n < len(bufs) && len(bufs[n]) > 0 {
		p := uintptr(unsafe.Pointer(&bufs[n][0]))
		if p != end || (p+uintptr(len(bufs[n]))-1)&^(heap.SlabSize-1) != base {
			break
		}
		end += uintptr(len(bufs[n]))
		n++
	}
	return n
}

func (fb *fixedBuffers) close() { fb.cancel() }
