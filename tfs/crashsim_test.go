package tfs

import (
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/heap"
	"github.com/tfsmount/tfsmount/pagecache"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// The crash simulator (the dm-log-writes method; docs/crash-ordering.md,
// "How it is tested"): a workload runs to completion on a device that
// records every write and flush; afterwards the images a power cut could
// have left are rebuilt at every moment just before a flush or FUA write
// completed (and at the end): what was durable then, plus none, a prefix,
// random subsets, or torn pieces of the writes that were not. Every image
// must:
//   - pass fsck and mount read-only;
//   - hold every file whose fsync (or a sync) returned before the crash,
//     at its names, with the content it had, unless something changed it
//     after the fsync and before the crash;
//   - show in every file only its own bytes or zeros: data is written in
//     16-byte stamps (magic, file id, write number, offset), so a file
//     showing another file's data, freed log blocks or its own bytes at
//     the wrong offset is found by a scan.

var (
	crashSeeds   = flag.Int("crashsim.seeds", 0, "crash simulator: run this many seeds in TestCrashSimLong")
	crashStates  = flag.Int("crashsim.states", 5000, "crash simulator: crash states to check in all in TestCrashSimLong")
	crashNoRules = flag.Bool("crashsim.norules", false, "crash simulator: run TestCrashSimLong with the ordering rules off, to see what they prevent")
)

// simConfig is one simulator run.
type simConfig struct {
	seed    int64
	ops     int    // random operations
	backend string // "mem", or an io engine on a file: "uring", "sync"
	// points is how many crash points to sample (0: all), perPoint how
	// many states to build at each, and maxStates (0: no limit) where to
	// stop.
	points, perPoint, maxStates int
	// workload, if set, replaces the random operations.
	workload func(s *sim)
	// repair: a state that fails fsck or the mount is given to fsck
	// --repair, and what it leaves must pass every check.
	repair bool
}

// simResult counts what a run checked and found.
type simResult struct {
	points, states   int
	fsckFail         int
	mountFail        int
	lostFsynced      int
	foreignBytes     int
	writes, promises int
	failures         []string // the first few, with the seed
	ops              map[string]int
	logExtensions    int // log extensions the workload linked
	// repaired counts broken states given to fsck --repair, repairFail
	// those it did not recover.
	repaired, repairFail int
}

func (r *simResult) fail(format string, args ...any) {
	if len(r.failures) < 8 {
		r.failures = append(r.failures, fmt.Sprintf(format, args...))
	}
}

func (r *simResult) bad() int {
	return r.fsckFail + r.mountFail + r.lostFsynced + r.foreignBytes + r.repairFail
}

// simFile is the model of one file of the workload.
type simFile struct {
	id    uint32
	node  *Node
	data  []byte          // what it holds now
	names map[string]bool // its paths now
	opens int
}

// promise is what an fsync or a sync guarantees from the moment it
// returned (clock) until the file or one of its names changes.
type promise struct {
	clock int
	id    uint32
	names []string
	size  int
	sum   [32]byte
	what  string
}

// sim runs a workload against a recording device and keeps the model.
type sim struct {
	t       testing.TB
	cfg     simConfig
	rng     *rand.Rand
	q       *bh.Queue
	dev     *blockdev.Faulty
	fs      *FS
	opts    Options
	files   map[uint32]*simFile
	byPath  map[string]*simFile
	everAt  map[string]map[uint32]bool // every file id ever linked at a path
	changed map[uint32][]int           // id -> clocks of changes
	pathCh  map[string][]int           // path -> clocks of changes
	prom    []promise
	nextID  uint32
	writeNo uint32
	ops     []string // "clock op" lines, for failure reports
	dirs    []string
	pool    *heap.PagePool // page buffers of the mounts that check crash images
	kinds   map[string]int // operations run, by kind
	checks  int            // crash images checked
	// extensions counts log extensions linked during the workload.
	extensions int
}

const stampMagic = 0x5354 // "TS"

// stamp is n bytes of data for file id, write number w, at file offset off
// (off and n multiples of 16).
func stamp(id, w uint32, off int64, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 16 {
		binary.LittleEndian.PutUint16(b[i:], stampMagic)
		binary.LittleEndian.PutUint32(b[i+2:], id)
		binary.LittleEndian.PutUint32(b[i+6:], w)
		o := uint64(off+int64(i)) / 16
		binary.LittleEndian.PutUint32(b[i+10:], uint32(o))
		binary.LittleEndian.PutUint16(b[i+14:], uint16(o>>32))
	}
	return b
}

func newSim(t testing.TB, cfg simConfig) *sim {
	q := testQueue(t)
	var inner blockdev.Device
	const size = 32 << 20
	switch cfg.backend {
	case "", "mem":
		inner = blockdev.NewMemory(q, size)
	default:
		path := filepath.Join(t.TempDir(), "crash.img")
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
		d, err := blockdev.Open(path, blockdev.OpenOptions{IO: cfg.backend, Queue: q})
		if err != nil {
			t.Fatalf("open %s with %s: %v", path, cfg.backend, err)
		}
		t.Cleanup(func() { d.Close() })
		inner = d
	}
	must(t, format.Mkfs(inner, format.MkfsOptions{Label: "crash"}))
	f := blockdev.NewFaulty(inner, q)
	must(t, f.Record())
	s := &sim{t: t, cfg: cfg, rng: rand.New(rand.NewSource(cfg.seed)), q: q, dev: f,
		opts:  Options{Queue: q, WritebackDelay: 4 * time.Millisecond, CacheSize: 8 << 20},
		files: map[uint32]*simFile{}, byPath: map[string]*simFile{}, everAt: map[string]map[uint32]bool{},
		changed: map[uint32][]int{}, pathCh: map[string][]int{}, nextID: 1,
		pool: heap.NewPagePool(heap.PoolConfig{Budget: 4 << 20}), kinds: map[string]int{}}
	s.mount()
	s.dirs = []string{"/"}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("d%d", i)
		s.do("mkdir "+name, func() error { _, err := s.fs.Mkdir(s.fs.Root(), name); return err })
		s.dirs = append(s.dirs, "/"+name)
	}
	s.sync()
	return s
}

func (s *sim) mount() {
	fs, err := Mount(s.dev, s.opts)
	if err != nil {
		s.t.Fatalf("seed %d: mount: %v", s.cfg.seed, err)
	}
	s.fs = fs
	for _, f := range s.files {
		if len(f.names) > 0 {
			f.node = s.node(anyName(f))
		}
	}
}

func anyName(f *simFile) string {
	names := make([]string, 0, len(f.names))
	for n := range f.names {
		names = append(names, n)
	}
	sort.Strings(names)
	return names[0]
}

func (s *sim) node(path string) *Node {
	n, err := s.fs.Resolve(path)
	if err != nil {
		s.t.Fatalf("seed %d: resolve %s: %v", s.cfg.seed, path, err)
	}
	return n
}

func (s *sim) dirOf(path string) (*Node, string) {
	i := strings.LastIndexByte(path, '/')
	d := path[:i]
	if d == "" {
		d = "/"
	}
	return s.node(d), path[i+1:]
}

func (s *sim) clock() int { return s.dev.Clock() }

// do runs one operation, noting it with the clock it started at.
func (s *sim) do(what string, op func() error) {
	s.ops = append(s.ops, fmt.Sprintf("%d %s", s.clock(), what))
	kind := what
	if i := strings.IndexAny(what, " "); i > 0 && kind != "offline compact" {
		kind = what[:i]
	}
	s.kinds[kind]++
	chain := s.chainLen()
	if err := op(); err != nil {
		s.t.Fatalf("seed %d: %s: %v", s.cfg.seed, what, err)
	}
	if n := s.chainLen(); n > chain {
		s.extensions += n - chain
	}
}

// chainLen is the number of extensions in the mounted log's chain.
func (s *sim) chainLen() int {
	if s.fs == nil || s.fs.closed.Load() {
		return 0
	}
	s.fs.mu.Lock()
	defer s.fs.mu.Unlock()
	if s.fs.w == nil {
		return len(s.fs.log.Exts)
	}
	return len(s.fs.w.chain)
}

func (s *sim) change(f *simFile, paths ...string) {
	c := s.clock()
	if f != nil {
		s.changed[f.id] = append(s.changed[f.id], c)
	}
	for _, p := range paths {
		s.pathCh[p] = append(s.pathCh[p], c)
	}
}

func (s *sim) link(f *simFile, path string) {
	f.names[path] = true
	s.byPath[path] = f
	if s.everAt[path] == nil {
		s.everAt[path] = map[uint32]bool{}
	}
	s.everAt[path][f.id] = true
}

func (s *sim) randomPath() string {
	return strings.TrimSuffix(s.dirs[s.rng.Intn(len(s.dirs))], "/") + "/" + fmt.Sprintf("f%d", s.rng.Intn(40))
}

func (s *sim) randomFile() *simFile {
	if len(s.byPath) == 0 {
		return nil
	}
	paths := make([]string, 0, len(s.byPath))
	for p := range s.byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return s.byPath[paths[s.rng.Intn(len(paths))]]
}

// create makes a new file at path (which must be free).
func (s *sim) create(path string) *simFile {
	dir, name := s.dirOf(path)
	f := &simFile{id: s.nextID, names: map[string]bool{}}
	s.nextID++
	s.change(nil, path)
	s.do("create "+path, func() (err error) { f.node, err = s.fs.Create(dir, name, true); return err })
	s.files[f.id] = f
	s.link(f, path)
	return f
}

// write writes a stamped range (16-aligned) into f.
func (s *sim) write(f *simFile, off int64, n int) {
	off, n = off/16*16, (n+15)/16*16
	s.writeNo++
	p := stamp(f.id, s.writeNo, off, n)
	s.change(f)
	s.do(fmt.Sprintf("write id %d [%d,+%d)", f.id, off, n), func() error {
		k, err := s.fs.Write(f.node, p, off)
		if err == nil && k != n {
			err = fmt.Errorf("short write %d", k)
		}
		return err
	})
	if end := int(off) + n; end > len(f.data) {
		f.data = append(f.data, make([]byte, end-len(f.data))...)
	}
	copy(f.data[off:], p)
}

func (s *sim) truncate(f *simFile, size int64) {
	size = size / 16 * 16
	s.change(f)
	s.do(fmt.Sprintf("truncate id %d to %d", f.id, size), func() error { return s.fs.Truncate(f.node, size) })
	if int(size) < len(f.data) {
		f.data = f.data[:size]
	} else {
		f.data = append(f.data, make([]byte, int(size)-len(f.data))...)
	}
}

func (s *sim) fallocate(f *simFile, mode uint32, off, n int64) {
	off, n = off/16*16, (n+15)/16*16
	s.change(f)
	s.do(fmt.Sprintf("fallocate id %d mode %#x [%d,+%d)", f.id, mode, off, n), func() error { return s.fs.Fallocate(f.node, mode, off, n) })
	end := off + n
	if mode&FallocKeepSize == 0 && int(end) > len(f.data) {
		f.data = append(f.data, make([]byte, int(end)-len(f.data))...)
	}
	if mode&(FallocPunchHole|FallocZeroRange) != 0 {
		clear(f.data[min(int(off), len(f.data)):min(int(end), len(f.data))])
	}
}

func (s *sim) unlink(path string) {
	f := s.byPath[path]
	dir, name := s.dirOf(path)
	s.change(f, path)
	s.do("unlink "+path, func() error { return s.fs.Unlink(dir, name) })
	delete(f.names, path)
	delete(s.byPath, path)
	if len(f.names) == 0 && f.opens == 0 {
		delete(s.files, f.id)
	}
}

func (s *sim) rename(from, to string) {
	f := s.byPath[from]
	od, on := s.dirOf(from)
	nd, nn := s.dirOf(to)
	victim := s.byPath[to]
	s.change(f, from, to)
	if victim != nil {
		s.change(victim)
	}
	s.do("rename "+from+" "+to, func() error { return s.fs.Rename(od, on, nd, nn, 0) })
	if victim != nil {
		delete(victim.names, to)
		if len(victim.names) == 0 && victim.opens == 0 {
			delete(s.files, victim.id)
		}
	}
	delete(f.names, from)
	delete(s.byPath, from)
	s.link(f, to)
}

func (s *sim) hardlink(f *simFile, to string) {
	d, name := s.dirOf(to)
	s.change(f, to)
	s.do(fmt.Sprintf("link id %d %s", f.id, to), func() error { return s.fs.Link(f.node, d, name) })
	s.link(f, to)
}

// fsync fsyncs f and records what it promises.
func (s *sim) fsync(f *simFile, dataOnly bool) {
	s.do(fmt.Sprintf("fsync id %d data-only %v", f.id, dataOnly), func() error { return s.fs.Fsync(f.node, dataOnly) })
	s.promise(f, "fsync")
}

func (s *sim) promise(f *simFile, what string) {
	if len(f.names) == 0 {
		return
	}
	names := make([]string, 0, len(f.names))
	for n := range f.names {
		names = append(names, n)
	}
	sort.Strings(names)
	s.prom = append(s.prom, promise{clock: s.clock(), id: f.id, names: names, size: len(f.data), sum: sha256.Sum256(f.data), what: what})
}

// sync is syncfs: every file is promised.
func (s *sim) sync() {
	s.do("sync", s.fs.Sync)
	for _, f := range s.files {
		s.promise(f, "sync")
	}
}

// remount closes the volume and mounts it again; offline, it compacts the
// log in between, as 'tfsmount compact' does.
func (s *sim) remount(compact bool) {
	for _, f := range s.files {
		for ; f.opens > 0; f.opens-- {
			s.fs.Release(f.node)
		}
		if len(f.names) == 0 {
			delete(s.files, f.id)
		}
	}
	s.do("unmount", s.fs.Close)
	for _, f := range s.files {
		s.promise(f, "unmount")
	}
	if compact {
		s.mount()
		s.do("offline compact", s.fs.Compact)
		s.do("close after compact", s.fs.Close)
	}
	s.mount()
}

// randomOps runs the random workload: every operation the issue lists,
// chosen with weights, some in bursts that grow the log.
func (s *sim) randomOps(n int) {
	for i := 0; i < n; i++ {
		f := s.randomFile()
		switch r := s.rng.Intn(100); {
		case r < 22 || f == nil:
			p := s.randomPath()
			if s.byPath[p] != nil {
				continue
			}
			nf := s.create(p)
			s.write(nf, int64(s.rng.Intn(8192)), 16+s.rng.Intn(96<<10))
			if s.rng.Intn(3) == 0 {
				s.fsync(nf, s.rng.Intn(2) == 0)
			}
		case r < 40:
			size := max(len(f.data), 1)
			s.write(f, int64(s.rng.Intn(size+8192)), 16+s.rng.Intn(48<<10))
		case r < 46:
			s.truncate(f, int64(s.rng.Intn(len(f.data)+16384)))
		case r < 50:
			s.fallocate(f, []uint32{0, FallocKeepSize, FallocPunchHole | FallocKeepSize, FallocZeroRange, FallocZeroRange | FallocKeepSize}[s.rng.Intn(5)],
				int64(s.rng.Intn(len(f.data)+8192)), int64(1+s.rng.Intn(64<<10)))
		case r < 58:
			to := s.randomPath()
			if s.byPath[to] == f {
				continue
			}
			s.rename(anyName(f), to)
		case r < 61:
			to := s.randomPath()
			if s.byPath[to] != nil {
				continue
			}
			s.hardlink(f, to)
		case r < 68:
			s.unlink(anyName(f))
		case r < 71:
			// Unlink while open, write to it, release.
			s.fs.Open(f.node)
			f.opens++
			s.unlink(anyName(f))
			if s.rng.Intn(2) == 0 {
				s.write(f, int64(len(f.data)), 4096)
			}
			f.opens--
			s.do(fmt.Sprintf("release id %d", f.id), func() error { s.fs.Release(f.node); return nil })
			if len(f.names) == 0 {
				delete(s.files, f.id)
			}
		case r < 80:
			s.fsync(f, s.rng.Intn(2) == 0)
		case r < 83:
			s.sync()
		case r < 87:
			// Large xattrs grow the log into new extensions.
			for k := 0; k < 1+s.rng.Intn(12); k++ {
				v := make([]byte, 1024+s.rng.Intn(56<<10))
				s.rng.Read(v)
				s.change(f)
				s.do(fmt.Sprintf("setxattr id %d", f.id), func() error { return s.fs.SetXattr(f.node, fmt.Sprintf("user.x%d", s.rng.Intn(4)), v, 0) })
			}
		case r < 89:
			s.burst(200 + s.rng.Intn(1500))
		case r < 91:
			s.do("compact", s.fs.Compact)
		case r < 92:
			s.remount(s.rng.Intn(2) == 0)
		case r < 95:
			s.do("fsync /", func() error { return s.fs.Fsync(s.fs.Root(), false) })
			for _, f := range s.files {
				s.promise(f, "fsync of a directory")
			}
		default:
			time.Sleep(time.Duration(s.rng.Intn(6)) * time.Millisecond) // let the flusher run
		}
	}
}

// burst creates and removes many empty files, which grows the log into
// new extensions and towards a compaction.
func (s *sim) burst(n int) {
	dir := s.dirs[1+s.rng.Intn(len(s.dirs)-1)]
	var made []string
	for i := 0; i < n; i++ {
		p := fmt.Sprintf("%s/b%d", dir, i)
		if s.byPath[p] != nil {
			continue
		}
		f := s.create(p)
		if i%97 == 0 {
			s.write(f, 0, 512)
		}
		made = append(made, p)
	}
	if s.rng.Intn(2) == 0 {
		s.sync()
	}
	for _, p := range made {
		if s.rng.Intn(4) != 0 {
			s.unlink(p)
		}
	}
}

// run runs the workload, closes the volume, and checks the crash states.
func (s *sim) run() *simResult {
	if s.cfg.workload != nil {
		s.cfg.workload(s)
	} else {
		s.randomOps(s.cfg.ops)
	}
	checkInvariants(s.t, s.fs)
	for _, f := range s.files {
		for ; f.opens > 0; f.opens-- {
			s.fs.Release(f.node)
		}
	}
	s.do("close", s.fs.Close)
	for _, f := range s.files {
		if len(f.names) > 0 {
			s.promise(f, "close")
		}
	}
	return s.check()
}

// check builds crash states and checks each.
func (s *sim) check() *simResult {
	rec := s.dev.Recording()
	res := &simResult{writes: rec.Writes(), promises: len(s.prom), ops: s.kinds, logExtensions: s.extensions}
	pts := rec.CrashPoints()
	if s.cfg.points > 0 && len(pts) > s.cfg.points {
		// A sample, always with the last point; the rng is the run's.
		s.rng.Shuffle(len(pts)-1, func(i, j int) { pts[i], pts[j] = pts[j], pts[i] })
		keep := append([]int(nil), pts[:s.cfg.points-1]...)
		keep = append(keep, rec.Events())
		sort.Ints(keep)
		pts = keep
	}
	w := rec.Walker()
	for _, at := range pts {
		if s.cfg.maxStates > 0 && res.states >= s.cfg.maxStates {
			break
		}
		w.Advance(at)
		res.points++
		pending := w.Pending()
		for k, st := range s.states(pending) {
			res.states++
			state := fmt.Sprintf("state %d (%s) of %d pending writes", k, st.what, len(pending))
			if broken := s.checkImage(res, w.Device(s.q, st.kept), at, state); broken && s.cfg.repair {
				s.checkRepair(res, w.Image(st.kept), at, state)
			}
		}
	}
	return res
}

type crashState struct {
	what string
	kept []blockdev.Kept
}

// states chooses the pending writes that reach the medium, perPoint ways:
// none, all, a prefix, random subsets, and random subsets with one
// multi-sector write torn.
func (s *sim) states(pending []blockdev.PendingWrite) []crashState {
	out := []crashState{{what: "none kept"}}
	if len(pending) == 0 {
		return out
	}
	all := make([]blockdev.Kept, len(pending))
	for i, p := range pending {
		all[i] = blockdev.Kept{Index: p.Index}
	}
	out = append(out, crashState{what: "all kept", kept: all})
	for len(out) < max(s.cfg.perPoint, 2) {
		switch k := len(out) % 3; {
		case k == 2:
			n := s.rng.Intn(len(pending) + 1)
			out = append(out, crashState{what: fmt.Sprintf("prefix of %d kept", n), kept: all[:n]})
		default:
			var kept []blockdev.Kept
			torn := k == 1
			for _, p := range pending {
				if s.rng.Intn(2) == 0 {
					continue
				}
				kp := blockdev.Kept{Index: p.Index}
				if torn && p.Sectors > 1 && s.rng.Intn(2) == 0 {
					kp.Sectors = make([]bool, p.Sectors)
					for j := range kp.Sectors {
						kp.Sectors[j] = s.rng.Intn(2) == 0
					}
				}
				kept = append(kept, kp)
			}
			what := "random subset"
			if torn {
				what = "random subset, some writes torn"
			}
			out = append(out, crashState{what: what, kept: kept})
		}
	}
	return out
}

// checkRepair runs fsck --repair on a crash image that failed its checks
// and checks the result like any crash image: it must pass them all.
func (s *sim) checkRepair(res *simResult, img []byte, at int, state string) {
	dev := blockdev.NewMemoryOn(s.q, img, false)
	var after simResult
	changes, rep, err := Repair(dev, Options{Queue: s.q})
	switch {
	case err != nil:
		after.fsckFail++
		after.fail("repair: %v", err)
	case !rep.Clean():
		after.fsckFail++
		after.fail("fsck after repair: %v (changes %q)", rep, changes)
	default:
		s.checkImage(&after, blockdev.NewMemoryOn(s.q, img, true), at, state+", after fsck --repair")
	}
	res.repaired++
	if after.bad() > 0 {
		res.repairFail++
		res.fail("seed %d, crash before event %d, %s: fsck --repair did not recover it: %s", s.cfg.seed, at, state, strings.Join(after.failures, "; "))
	}
}

// checkImage checks one crash image; at is the crash point. broken says
// the image did not mount or fsck found problems.
func (s *sim) checkImage(res *simResult, dev blockdev.Device, at int, state string) (broken bool) {
	where := fmt.Sprintf("seed %d backend %s, crash before event %d, %s", s.cfg.seed, s.cfg.backend, at, state)
	ro := Options{Queue: s.q, ReadOnly: true, Pool: s.pool}
	fs, problems, err := load(dev, ro, false)
	if err != nil {
		res.mountFail++
		res.fail("%s: mount: %v\n%s", where, err, s.opsNear(at))
		return true
	}
	if pr := fs.check(problems); len(pr) > 0 {
		res.fsckFail++
		res.fail("%s: fsck: %v\n%s", where, pr, s.opsNear(at))
		return true
	}
	// Every tenth state is read through a real read-only mount (the page
	// cache); the others straight from the extent map, which is what the
	// cache reads from too, and far cheaper in the debug build.
	read := func(n *Node, p []byte) (int, error) { return readDirect(fs, dev, n, p) }
	if s.checks++; s.checks%10 == 0 {
		if err := fs.start(ro, nil); err != nil {
			res.mountFail++
			res.fail("%s: start: %v", where, err)
			return true
		}
		defer fs.Close()
		read = func(n *Node, p []byte) (int, error) { return fs.Read(n, p, 0) }
	}
	// Every file: its own bytes or zeros.
	seen := map[string]bool{}
	fs.walk(func(path string, n *Node) {
		if n.kind != KindFile {
			return
		}
		seen[path] = true
		size := fs.Getattr(n).Size
		buf := make([]byte, size)
		if k, err := read(n, buf); err != nil || int64(k) != size {
			res.mountFail++
			res.fail("%s: read %s: %d of %d bytes, %v", where, path, k, size, err)
			return
		}
		if msg := s.foreign(path, buf); msg != "" {
			res.foreignBytes++
			res.fail("%s: %s %s\n%s", where, path, msg, s.opsNear(at))
		}
	})
	// Every promise still in force: for each file the last one made
	// before the crash (an earlier one in force has the same content and
	// names, or something changed in between and it is not in force).
	last := map[uint32]int{}
	for i, p := range s.prom {
		if p.clock <= at {
			last[p.id] = i
		}
	}
	for _, i := range last {
		p := s.prom[i]
		if s.changedBetween(p, at) {
			continue
		}
		for _, name := range p.names {
			n, err := fs.Resolve(name)
			if err != nil {
				res.lostFsynced++
				res.fail("%s: file %d promised by %s at event %d is not at %s: %v\n%s", where, p.id, p.what, p.clock, name, err, s.opsNear(at))
				break
			}
			got := make([]byte, fs.Getattr(n).Size)
			if _, err := read(n, got); err != nil || len(got) != p.size || sha256.Sum256(got) != p.sum {
				res.lostFsynced++
				res.fail("%s: file %d at %s promised by %s at event %d: %d bytes, want %d (%v)%s\n%s", where, p.id, name, p.what, p.clock, len(got), p.size, err, firstBytes(got), s.opsNear(at))
				break
			}
		}
	}
	return false
}

// readDirect reads a file from the start into p (as long as the file)
// through its extent map, without the page cache.
func readDirect(fs *FS, dev blockdev.Device, n *Node, p []byte) (int, error) {
	segs, err := backing{fs, n}.Map(0, int64(len(p)))
	if err != nil {
		return 0, err
	}
	for _, sg := range segs {
		dst := p[sg.Off : sg.Off+sg.Len]
		if sg.Dev == pagecache.Hole {
			clear(dst)
			continue
		}
		if err := blockdev.ReadAt(dev, dst, sg.Dev); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// firstBytes shows the start of what a file held, for failure reports.
func firstBytes(b []byte) string {
	return fmt.Sprintf(" [first bytes % x]", b[:min(len(b), 16)])
}

// changedBetween reports whether p's file or one of its names changed
// after p was made and before a crash at at.
func (s *sim) changedBetween(p promise, at int) bool {
	in := func(cs []int) bool {
		for _, c := range cs {
			if c >= p.clock && c <= at {
				return true
			}
		}
		return false
	}
	if in(s.changed[p.id]) {
		return true
	}
	for _, n := range p.names {
		if in(s.pathCh[n]) {
			return true
		}
	}
	return false
}

// foreign scans a file's bytes and describes the first 16-byte chunk that
// is neither zeros nor a stamp of a file once linked at path, at its own
// offset; "" if there is none.
func (s *sim) foreign(path string, b []byte) string {
	var id uint32
	for i := 0; i+16 <= len(b); i += 16 {
		c := b[i : i+16]
		zero := true
		for _, x := range c {
			if x != 0 {
				zero = false
				break
			}
		}
		if zero {
			continue
		}
		cid := binary.LittleEndian.Uint32(c[2:])
		off := uint64(binary.LittleEndian.Uint32(c[10:])) | uint64(binary.LittleEndian.Uint16(c[14:]))<<32
		switch {
		case binary.LittleEndian.Uint16(c) != stampMagic:
			return fmt.Sprintf("holds bytes that are not file data at offset %d: % x", i, c)
		case !s.everAt[path][cid]:
			return fmt.Sprintf("holds data of file %d (never at this path) at offset %d", cid, i)
		case id != 0 && cid != id:
			return fmt.Sprintf("holds data of files %d and %d", id, cid)
		case off*16 != uint64(i):
			return fmt.Sprintf("holds its data for offset %d at offset %d", off*16, i)
		}
		id = cid
	}
	return ""
}

// opsNear lists the operations around a crash point, for failure reports.
func (s *sim) opsNear(at int) string {
	var out []string
	for i, l := range s.ops {
		var c int
		fmt.Sscan(l, &c)
		if c <= at && (i+1 == len(s.ops) || func() bool { var n int; fmt.Sscan(s.ops[i+1], &n); return n > at }()) {
			lo := max(0, i-6)
			out = append(out, s.ops[lo:min(len(s.ops), i+3)]...)
			break
		}
	}
	return "  operations (clock, op) around the crash:\n    " + strings.Join(out, "\n    ")
}

func runSim(t testing.TB, cfg simConfig) *simResult {
	s := newSim(t, cfg)
	return s.run()
}

func (r *simResult) String() string {
	s := fmt.Sprintf("%d crash points, %d states, %d writes, %d promises: %d fsck failures, %d mount failures, %d fsync'd files lost or wrong, %d files with bytes not their own",
		r.points, r.states, r.writes, r.promises, r.fsckFail, r.mountFail, r.lostFsynced, r.foreignBytes)
	if r.repaired > 0 {
		s += fmt.Sprintf("; fsck --repair on %d broken states: %d not recovered", r.repaired, r.repairFail)
	}
	return s
}

// coverage says how often the rare paths ran.
func (r *simResult) coverage() string {
	var kinds []string
	for k := range r.ops {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var b strings.Builder
	fmt.Fprintf(&b, "%d new log extensions;", r.logExtensions)
	for _, k := range kinds {
		fmt.Fprintf(&b, " %s %d", k, r.ops[k])
	}
	return b.String()
}

// TestCrashSim is the quick run in make test: a few seeds of the random
// workload on the memory device and one on each io engine.
func TestCrashSim(t *testing.T) {
	cfgs := []simConfig{
		{seed: 1, ops: 300, backend: "mem", points: 80, perPoint: 6},
		{seed: 2, ops: 300, backend: "mem", points: 80, perPoint: 6},
		{seed: 3, ops: 200, backend: "uring", points: 40, perPoint: 5},
		{seed: 4, ops: 200, backend: "sync", points: 40, perPoint: 5},
	}
	if raceBuild {
		cfgs = []simConfig{{seed: 5, ops: 80, backend: "uring", points: 8, perPoint: 3}}
	}
	for _, cfg := range cfgs {
		t.Run(fmt.Sprintf("seed%d-%s", cfg.seed, cfg.backend), func(t *testing.T) {
			res := runSim(t, cfg)
			t.Log(res)
			t.Log(res.coverage())
			if res.bad() > 0 {
				t.Fatalf("%s\n%s", res, strings.Join(res.failures, "\n"))
			}
			if res.states < cfg.points {
				t.Fatalf("only %d states checked", res.states)
			}
		})
	}
}

// TestCrashSimLong is the long run (scripts/crashsim.sh): -crashsim.seeds
// seeds with -crashsim.states states in all, every crash point of each run.
func TestCrashSimLong(t *testing.T) {
	if *crashSeeds == 0 {
		t.Skip("the long crash simulation runs with -crashsim.seeds=N (scripts/crashsim.sh)")
	}
	if *crashNoRules {
		for _, r := range []string{"publishLast", "dataFirst", "freeAfterCommit"} {
			setRule(r, false)
			defer setRule(r, true)
		}
	}
	var total simResult
	perSeed := *crashStates / *crashSeeds
	for i := 0; i < *crashSeeds; i++ {
		seed := int64(1000 + i)
		backend := []string{"mem", "uring", "mem", "sync", "mem"}[i%5]
		cfg := simConfig{seed: seed, ops: 1000, backend: backend, perPoint: 6, maxStates: perSeed}
		// A sample of points large enough for the per-seed share of
		// states (points without pending writes give one state only).
		cfg.points = perSeed*13/10/cfg.perPoint + 1
		res := runSim(t, cfg)
		t.Logf("seed %d (%s): %s", seed, backend, res)
		t.Logf("seed %d coverage: %s", seed, res.coverage())
		total.points += res.points
		total.states += res.states
		total.writes += res.writes
		total.promises += res.promises
		total.fsckFail += res.fsckFail
		total.mountFail += res.mountFail
		total.lostFsynced += res.lostFsynced
		total.foreignBytes += res.foreignBytes
		total.failures = append(total.failures, res.failures...)
	}
	t.Logf("all seeds: %s", &total)
	if *crashNoRules {
		t.Logf("(ordering rules off: failures are what the rules prevent)")
		return
	}
	if total.bad() > 0 {
		t.Fatalf("%s\n%s", &total, strings.Join(total.failures[:min(len(total.failures), 12)], "\n"))
	}
	if total.states < *crashStates*9/10 {
		t.Fatalf("only %d crash states checked, want about %d", total.states, *crashStates)
	}
}

// The ordering rules of the package comment, one test each: the rule's
// workload passes the simulator, and fails it with the rule taken out.

// ruleWorkloads are small workloads that reach each rule's hazard.
var ruleWorkloads = map[string]func(s *sim){
	// Rule 1: the log grows into new extensions (bursts of creates, large
	// xattrs) and is compacted, with fsyncs all along.
	"publishLast": func(s *sim) {
		// Metadata only, written by the background flush: no data and no
		// fsync asks for a flush that would hide the rule's.
		f := s.create("/d1/x")
		for round := 0; round < 40; round++ {
			v := make([]byte, 24<<10)
			s.rng.Read(v)
			s.change(f)
			s.do("setxattr", func() error { return s.fs.SetXattr(f.node, fmt.Sprintf("user.big%d", round%3), v, 0) })
			for i := 0; i < 20; i++ {
				s.create(fmt.Sprintf("/d2/r%d-%d", round, i))
			}
			s.do("flush", func() error { return s.fs.flush(false) })
		}
	},
	// Rule 2: a file's new extent reuses blocks another file freed (so
	// they hold that file's stamps), and is logged in a small log write.
	"dataFirst": func(s *sim) {
		for round := 0; round < 6; round++ {
			a := s.create(fmt.Sprintf("/a%d", round))
			s.write(a, 0, 64<<10)
			s.sync()
			s.unlink(fmt.Sprintf("/a%d", round))
			s.sync()
			b := s.create(fmt.Sprintf("/b%d", round))
			s.sync()
			s.write(b, 0, 64<<10)
			s.fsync(b, true)
		}
	},
	// Rule 3: blocks of a file removed (or cut by truncate) without a sync
	// are wanted at once by another file, which is written back.
	"freeAfterCommit": func(s *sim) {
		for round := 0; round < 6; round++ {
			a := s.create(fmt.Sprintf("/a%d", round))
			s.write(a, 0, 64<<10)
			s.sync()
			if round%2 == 0 {
				s.unlink(fmt.Sprintf("/a%d", round))
			} else {
				s.truncate(a, 0)
			}
			b := s.create(fmt.Sprintf("/b%d", round))
			s.write(b, 0, 64<<10)
			s.do("write back", func() error { return s.fs.data.Sync() })
			s.sync()
		}
	},
}

func setRule(name string, on bool) {
	switch name {
	case "publishLast":
		orderRules.publishLast = on
	case "dataFirst":
		orderRules.dataFirst = on
	case "freeAfterCommit":
		orderRules.freeAfterCommit = on
	}
}

func TestOrderingRules(t *testing.T) {
	if raceBuild {
		t.Skip("single-threaded workloads: the unit run covers them")
	}
	for _, rule := range []string{"publishLast", "dataFirst", "freeAfterCommit"} {
		t.Run(rule, func(t *testing.T) {
			cfg := simConfig{seed: 7, backend: "mem", perPoint: 6, workload: ruleWorkloads[rule]}
			res := runSim(t, cfg)
			t.Logf("with the rule: %s", res)
			if res.bad() > 0 {
				t.Fatalf("with the rule: %s\n%s", res, strings.Join(res.failures, "\n"))
			}
			setRule(rule, false)
			defer setRule(rule, true)
			// What the rule prevents is what fsck --repair must undo:
			// torn logs (rule 1). Files showing other files' data (rules 2
			// and 3) are beyond any fsck.
			cfg.repair = rule == "publishLast"
			res = runSim(t, cfg)
			t.Logf("without the rule: %s", res)
			if res.bad()-res.repairFail == 0 {
				t.Fatalf("without rule %s the simulator found nothing: %s", rule, res)
			}
			t.Logf("first failure without the rule: %s", res.failures[0])
			if cfg.repair {
				if res.repaired == 0 || res.repairFail > 0 {
					t.Fatalf("fsck --repair recovered %d of %d broken states:\n%s", res.repaired-res.repairFail, res.repaired, strings.Join(res.failures, "\n"))
				}
				t.Logf("fsck --repair recovered all %d broken states: clean, every fsync'd file intact, every file's bytes its own", res.repaired)
			}
		})
	}
}
