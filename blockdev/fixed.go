package blockdev

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tfsmount/tfsmount/blockdev/uring"
	"github.com/tfsmount/tfsmount/heap"
)

// fixedBuffers mirrors the page heap's slabs in the ring's registered
// buffer table (index = slab index), so that a run of page buffers inside
// one slab goes out as one READ_FIXED/WRITE_FIXED without the kernel
// pinning pages per request.
//
// The table is registered sparse and updated as the heap maps and unmaps
// slabs (heap.PagePool.Watch). A table update can take milliseconds (the
// kernel waits for the ring's resources to quiesce), and the heap tells us
// with its lock held, so updates for new slabs are made by a registrar
// goroutine in the order they were announced: until its update is done a
// slab is simply absent from byBase and its buffers go out as READV/WRITEV.
// An unmap waits for the registrar, so the table never refers to memory the
// heap has given back. A slab is only unmapped when none of its pages is
// allocated, so no request in flight can refer to it.
type fixedBuffers struct {
	r       *uring.Ring
	pool    *heap.PagePool
	cancel  func()
	updates chan slabUpdate // to the registrar; never full (see slabChanged)
	done    chan struct{}   // closed when the registrar has exited
	mu      sync.RWMutex
	byBase  map[uintptr]int // slab base address -> registered index
}

// slabUpdate is one table change: slab idx now holds mem, or nothing (mem
// nil). ack, if set, is closed once the table no longer refers to the
// slab's old memory.
type slabUpdate struct {
	idx int
	mem []byte
	ack chan struct{}
}

func registerPool(r *uring.Ring, pool *heap.PagePool) (*fixedBuffers, error) {
	reg := uring.RsrcRegister{Nr: uint32(pool.MaxSlabs()), Flags: uring.RsrcRegisterSparse}
	if err := r.Register(uring.RegisterBuffers2, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return nil, fmt.Errorf("register %d sparse buffers: %w", reg.Nr, err)
	}
	// Between two unmaps of a slab at most one map of it is queued, and an
	// unmap (or a settle) waits for the queue to drain: MaxSlabs+1 entries
	// never fill.
	fb := &fixedBuffers{r: r, pool: pool, byBase: map[uintptr]int{},
		updates: make(chan slabUpdate, pool.MaxSlabs()+1), done: make(chan struct{})}
	go fb.registrar()
	fb.cancel = pool.Watch(fb.slabChanged)
	return fb, nil
}

// slabChanged is the heap's notice, under its lock, that slab idx now holds
// mem (mapped) or nothing (mem == nil, about to be unmapped).
func (fb *fixedBuffers) slabChanged(idx int, mem []byte) {
	if mem != nil {
		fb.updates <- slabUpdate{idx: idx, mem: mem}
		return
	}
	ack := make(chan struct{})
	fb.updates <- slabUpdate{idx: idx, ack: ack}
	<-ack
}

// settle waits until every update announced so far is in the table.
func (fb *fixedBuffers) settle() {
	ack := make(chan struct{})
	fb.updates <- slabUpdate{idx: -1, ack: ack}
	<-ack
}

// registrar applies table updates in order. A failed registration only
// means that slab's buffers use READV/WRITEV.
func (fb *fixedBuffers) registrar() {
	defer close(fb.done)
	for u := range fb.updates {
		if u.idx < 0 { // a settle barrier
			close(u.ack)
			continue
		}
		fb.mu.Lock()
		for base, i := range fb.byBase {
			if i == u.idx {
				delete(fb.byBase, base)
			}
		}
		fb.mu.Unlock()
		var iov unix.Iovec
		if u.mem != nil {
			iov.Base = &u.mem[0]
			iov.SetLen(len(u.mem))
		}
		up := uring.RsrcUpdate2{Offset: uint32(u.idx), Data: uint64(uintptr(unsafe.Pointer(&iov))), Nr: 1}
		err := fb.r.Register(uring.RegisterBuffersUpdate, unsafe.Pointer(&up), unsafe.Sizeof(up))
		runtime.KeepAlive(&iov)
		if err == nil && u.mem != nil {
			fb.mu.Lock()
			fb.byBase[uintptr(unsafe.Pointer(&u.mem[0]))] = u.idx
			fb.mu.Unlock()
		}
		if u.ack != nil {
			close(u.ack)
		}
	}
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

// close stops following the heap and waits for the registrar, so no table
// update races with the ring's teardown.
func (fb *fixedBuffers) close() {
	fb.cancel()
	close(fb.updates)
	<-fb.done
}
