package pagecache

import (
	"encoding/binary"
	"errors"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/heap"
)

// The stress test writes 8-byte words that encode their own offset and
// the generation of the write that stored them, so a reader can tell a
// misplaced word (wrong offset), a stale one (older than a write that
// had completed before the read began) and an invented one (newer than
// any write started before the read ended).

const stressWord = 8

func encodeWord(w int64, gen uint32) uint64 {
	return uint64(uint32(w)+1) | uint64(gen)<<32
}

// stressFile is one file of the stress test with its shadow model.
type stressFile struct {
	*file
	sizeMu    sync.RWMutex // readers share, truncate excludes them
	size      atomic.Int64
	mu        sync.Mutex // guards the shadows
	started   []uint32   // per word: generation of the newest write started
	completed []uint32   // per word: generation of the newest write completed
}

func (sf *stressFile) snapshot(shadow []uint32, from, to int64) []uint32 {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	return append([]uint32(nil), shadow[from:to]...)
}

// truncateFake shrinks the fake file's mapping as a filesystem would:
// blocks wholly past size are forgotten and the rest of the last block is
// zeroed on the device, so bytes past EOF read as zeros if the file grows.
func (r *rig) truncateFake(f *fakeBacking, size int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range []map[int64]int64{f.blocks, f.pending} {
		for b, d := range m {
			switch {
			case b*fakeBlock >= size:
				delete(m, b)
			case (b+1)*fakeBlock > size:
				in := size - b*fakeBlock
				if err := blockdev.WriteAt(r.mem, make([]byte, fakeBlock-in), d*fakeBlock+in); err != nil {
					panic(err)
				}
			}
		}
	}
}

// TestStressConcurrentReadWriteTruncateSync runs writers (with truncates),
// readers and syncers on a few files through a cache of a few pages, over
// a device that delays and reorders completions, with the write-back timer
// running, and checks every byte every reader sees and, at the end, every
// byte on the device. Run it with -race -tags tfsdebug.
func TestStressConcurrentReadWriteTruncateSync(t *testing.T) {
	t.Run("clean", func(t *testing.T) { stress(t, false) })
	// With faults, operations may fail (reads, partial-page writes and
	// syncs with the device error, anything with ErrNoMemory) but no
	// accepted write is lost and no read returns a wrong byte.
	t.Run("faults", func(t *testing.T) { stress(t, true) })
}

func stress(t *testing.T, faults bool) {
	const (
		files    = 3
		readers  = 2 // per file
		maxPages = 12
		opsEach  = 300
	)
	r, fd := faultRig(t, rigOpts{budget: 16 * PageSize, delay: 2 * time.Millisecond, workers: 4, devSize: 8 << 20})
	fd.set(func(f *faultDev) { f.maxWait = 200 * time.Microsecond })
	allowed := func(err error) bool { return errors.Is(err, heap.ErrNoMemory) }
	if faults {
		// 3% of device requests and 2% of page allocations fail.
		frnd := rand.New(rand.NewSource(7))
		fd.set(func(f *faultDev) {
			f.failIf = func(*blockdev.Request) bool { return frnd.Intn(100) < 3 }
		})
		var amu sync.Mutex
		arnd := rand.New(rand.NewSource(8))
		r.pool.FailWhen(func() bool {
			amu.Lock()
			defer amu.Unlock()
			return arnd.Intn(100) < 2
		})
		allowed = func(err error) bool {
			return errors.Is(err, heap.ErrNoMemory) || errors.Is(err, errInjected)
		}
	}
	maxWords := int64(maxPages * PageSize / stressWord)
	var sfs []*stressFile
	for i := 0; i < files; i++ {
		sfs = append(sfs, &stressFile{file: r.newFile(), started: make([]uint32, maxWords), completed: make([]uint32, maxWords)})
	}
	var (
		wg       sync.WaitGroup // readers and the syncer
		writers  sync.WaitGroup
		failures atomic.Int64
		noMem    atomic.Int64
		reads    atomic.Int64
	)
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	stop := make(chan struct{})

	for i, sf := range sfs {
		writers.Add(1)
		go func(seed int64) { // writer
			defer writers.Done()
			rnd := rand.New(rand.NewSource(seed))
			gen := uint32(0)
			for op := 0; op < opsEach; op++ {
				gen++
				if rnd.Intn(10) == 0 {
					newSize := rnd.Int63n(maxWords) * stressWord
					sf.sizeMu.Lock()
					sf.n.Truncate(newSize)
					r.truncateFake(sf.b, newSize)
					sf.mu.Lock()
					for w := newSize / stressWord; w < maxWords; w++ {
						sf.started[w], sf.completed[w] = 0, 0
					}
					sf.mu.Unlock()
					sf.size.Store(newSize)
					sf.sizeMu.Unlock()
					continue
				}
				w0 := rnd.Int63n(maxWords)
				nw := min(1+rnd.Int63n(3*PageSize/stressWord), maxWords-w0)
				buf := make([]byte, nw*stressWord)
				for i := int64(0); i < nw; i++ {
					binary.LittleEndian.PutUint64(buf[i*stressWord:], encodeWord(w0+i, gen))
				}
				sf.sizeMu.RLock()
				sf.mu.Lock()
				for w := w0; w < w0+nw; w++ {
					sf.started[w] = gen
				}
				sf.mu.Unlock()
				size := sf.size.Load()
				k, err := sf.n.Write(buf, w0*stressWord, size)
				if err != nil {
					if !allowed(err) {
						fail("write: %v", err)
					}
					noMem.Add(1)
				}
				kw := int64(k) / stressWord
				sf.mu.Lock()
				for w := w0; w < w0+kw; w++ {
					sf.completed[w] = gen
				}
				for w := w0 + kw; w < w0+nw; w++ {
					// Not accepted: the word keeps whatever it had.
					sf.started[w] = max(sf.started[w], sf.completed[w])
				}
				sf.mu.Unlock()
				if k > 0 {
					sf.size.Store(max(size, w0*stressWord+int64(k)))
				}
				sf.sizeMu.RUnlock()
			}
		}(int64(i + 1))
		for j := 0; j < readers; j++ {
			wg.Add(1)
			go func(seed int64) { // reader
				defer wg.Done()
				rnd := rand.New(rand.NewSource(seed))
				for {
					select {
					case <-stop:
						return
					default:
					}
					sf.sizeMu.RLock()
					size := sf.size.Load()
					if size == 0 {
						sf.sizeMu.RUnlock()
						time.Sleep(100 * time.Microsecond)
						continue
					}
					w0 := rnd.Int63n(size / stressWord)
					nw := 1 + rnd.Int63n(4*PageSize/stressWord)
					lo := sf.snapshot(sf.completed, w0, min(w0+nw, maxWords))
					buf := make([]byte, nw*stressWord)
					k, err := sf.n.Read(buf, w0*stressWord, size)
					hi := sf.snapshot(sf.started, w0, min(w0+nw, maxWords))
					sf.sizeMu.RUnlock()
					reads.Add(1)
					if err != nil {
						if !allowed(err) {
							fail("read: %v", err)
						}
						noMem.Add(1)
						continue
					}
					if want := min(nw*stressWord, size-w0*stressWord); int64(k) != want {
						fail("read of %d words at word %d of a %d-byte file returned %d bytes", nw, w0, size, k)
					}
					for i := int64(0); i < int64(k)/stressWord; i++ {
						v := binary.LittleEndian.Uint64(buf[i*stressWord:])
						gen := uint32(v >> 32)
						if v != 0 && uint32(v)-1 != uint32(w0+i) {
							fail("word %d holds the word of offset %d", w0+i, uint32(v)-1)
							break
						}
						if gen < lo[i] || gen > hi[i] {
							fail("word %d has generation %d, want %d..%d", w0+i, gen, lo[i], hi[i])
							break
						}
					}
				}
			}(int64(100*i + j))
		}
	}
	wg.Add(1)
	go func() { // syncer
		defer wg.Done()
		rnd := rand.New(rand.NewSource(99))
		for {
			select {
			case <-stop:
				return
			default:
			}
			var err error
			if rnd.Intn(4) == 0 {
				err = r.c.Sync()
			} else {
				err = sfs[rnd.Intn(files)].n.Sync()
			}
			if err != nil && !allowed(err) {
				fail("sync: %v", err)
			}
			time.Sleep(time.Duration(rnd.Intn(500)) * time.Microsecond)
		}
	}()
	// Writers end on their own; then stop the rest.
	done := make(chan struct{})
	go func() {
		writers.Wait()
		close(stop)
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		t.Fatal("stress test hung")
	}
	fd.set(func(f *faultDev) { f.failIf = nil })
	r.pool.FailWhen(nil)
	r.c.Sync() // reports (and clears) errors left sticky by the faults
	if err := r.c.Sync(); err != nil {
		t.Fatal(err)
	}
	fd.settle(t)
	r.checkInvariants(t)
	for i, sf := range sfs {
		size := sf.size.Load()
		want := make([]byte, size)
		for w := int64(0); w < size/stressWord; w++ {
			if g := sf.completed[w]; g != 0 {
				binary.LittleEndian.PutUint64(want[w*stressWord:], encodeWord(w, g))
			}
		}
		sf.file.size = size
		got := r.onDisk(sf.file)
		for w := int64(0); w < size/stressWord; w++ {
			if binary.LittleEndian.Uint64(got[w*stressWord:]) != binary.LittleEndian.Uint64(want[w*stressWord:]) {
				t.Errorf("file %d word %d on the device: %#x, want %#x", i, w,
					binary.LittleEndian.Uint64(got[w*stressWord:]), binary.LittleEndian.Uint64(want[w*stressWord:]))
				break
			}
		}
	}
	s := r.c.Stats()
	t.Logf("%d reads, %d failed operations; stats %+v", reads.Load(), noMem.Load(), s)
}
