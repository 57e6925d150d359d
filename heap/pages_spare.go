package heap

// The spare slab. Mapping a slab is cheap, but the first touch of its 2 MiB
// (by the io_uring registration, which pins the pages, or by the first
// copy) makes the kernel zero them, which on a VM costs milliseconds; done
// inside Alloc it held the pool lock and stalled a streaming reader or
// writer once per 2 MiB (a quarter of a cold 512 MiB read). So whenever a
// slab is mapped and the pool has room for more, a goroutine maps and
// populates the next ones in the background, outside the lock, and mapSlab
// takes them ready-made. At most maxSpares exist, and only while mapped
// slabs plus spares stay within MaxSlabs, so spares never let memory
// exceed the budget.
//
// Guarded by PagePool.mu: spare (the ready slabs) and preparing
// (a goroutine is making one).

// takeSpare returns the spare slab's memory, or nil. REQUIRES: p.mu.
func (p *PagePool) takeSpare() []byte {
	k := len(p.spare)
	if k == 0 {
		return nil
	}
	mem := p.spare[k-1]
	p.spare = p.spare[:k-1]
	return mem
}

// roomForSpare reports whether another slab could be mapped besides the
// mapped ones and the spare. REQUIRES: p.mu.
func (p *PagePool) roomForSpare() bool {
	free := 0
	for _, s := range p.slabs {
		if s == nil {
			free++
		}
	}
	return free > len(p.spare)
}

// startSpare starts making a spare if there is none, none is being made
// and there is room for one. REQUIRES: p.mu.
func (p *PagePool) startSpare() {
	if p.closed || len(p.spare) >= maxSpares || p.preparing || !p.roomForSpare() {
		return
	}
	p.preparing = true
	go p.makeSpare()
}

// makeSpare maps and populates a slab with no lock held, then offers it to
// the pool, which drops it if it was closed or no longer has room.
func (p *PagePool) makeSpare() {
	mem, err := slabMap()
	if err == nil {
		slabPopulate(mem)
	}
	p.mu.Lock()
	p.preparing = false
	keep := err == nil && !p.closed && len(p.spare) < maxSpares && p.roomForSpare()
	if keep {
		p.spare = append(p.spare, mem)
		p.startSpare()
	}
	p.mu.Unlock()
	if err == nil && !keep {
		slabUnmap(mem)
	}
}

// dropSpare unmaps the spare, if any. REQUIRES: p.mu.
func (p *PagePool) dropSpare() {
	for mem := p.takeSpare(); mem != nil; mem = p.takeSpare() {
		slabUnmap(mem)
	}
}

// maxSpares is how many slabs are kept ready: enough to stay ahead of a
// stream that uses a slab every couple of milliseconds.
const maxSpares = 4
