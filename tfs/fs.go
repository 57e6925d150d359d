package tfs

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/heap"
	"github.com/tfsmount/tfsmount/pagecache"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// FS is one mounted TFS volume.
//
// Locking: mu guards all metadata (the tuple graph, nodes, extents, the
// allocator, the log writer). It is never held while calling into a
// pagecache node, because the cache calls back into Backing methods, which
// take mu themselves. A normal log write (writeLog) drops it while the
// device writes, flushes and discards, so file I/O does not wait for an
// fsync. Two paths keep it across device I/O: compactLocked (from flushLog,
// Compact, mount and repair) writes and flushes the new chain and block 0
// and discards the old chain, because the tree it wrote must not change
// before block 0 switches to it; and giveBack discards with it held, which
// only happens with ordering rule 3 turned off (tests). logIO orders the
// writers: whoever writes the log or flushes it holds logIO, taken before
// mu.
type FS struct {
	logIO    sync.Mutex
	mu       sync.Mutex
	dev      blockdev.Device // the volume
	q        *bh.Queue
	ownQueue bool
	ro       bool
	loc      format.VolumeLocation
	blocks   uint64
	free     *heap.Ranges
	log      *format.Log
	w        *logWriter // nil when read-only
	root     *Node
	// Inode numbering (ino.go): byIno holds every linked node by number.
	byIno    map[uint64]*Node
	inoBase  uint64
	gen      uint32
	spareIno uint64
	data     *pagecache.Cache
	reserved uint64 // blocks promised to delayed allocation
	dirty    map[*Node]bool
	// orphans counts files unlinked while open, whose blocks come back at
	// their last Release; orphanFreed is closed (and replaced) each time
	// one is released.
	orphans     int
	orphanFreed chan struct{}
	closed      atomic.Bool // set once, under mu; checkWritable reads it without
	// lostWrites: the device lost writes it had completed (an NBD server
	// that lost its cache with the connection). What the log would record
	// next may point at data that is gone, so nothing more is written: the
	// volume stays as of its last good flush, a state a power cut could
	// have left, which mounts clean. Every change fails with this error.
	lostWrites atomic.Pointer[error]
	logf       func(format string, args ...any) // Options.Logf; nil: not logged
	delay      time.Duration
	stop       chan struct{}
	stopped    chan struct{}
	kick       chan struct{} // asks the flusher to write now
	// freeing holds block ranges freed by staged records: they return to
	// the allocator once those records are durable (freeAfterCommit);
	// freeingBlocks counts them, and statfs shows them as free.
	freeing       [][2]uint64
	freeingBlocks uint64
	// skipped names the malformed entries of a volume mounted despite
	// them (read-only), by children tuple: lookups and listings pass
	// over them.
	skipped map[*format.Tuple]map[string]bool
	// logUsed is the allocator with only the log reserved, kept by a load
	// for repair, which builds the model again after fixing the graph.
	logUsed *heap.Ranges
}

// Mount finds the volume, replays its log and derives free space.
func Mount(dev blockdev.Device, opts Options) (*FS, error) {
	fs, problems, err := load(dev, opts, false)
	if err != nil {
		return nil, err
	}
	if err := fs.start(opts, problems); err != nil {
		fs.closeQueue()
		return nil, err
	}
	return fs, nil
}

// load reads the volume into a new FS without starting anything; problems
// are returned for fsck. A mount fails if there are any. salvage (fsck
// --repair) ends an unreadable log before its first unreadable record.
func load(dev blockdev.Device, opts Options, salvage bool) (*FS, []problem, error) {
	q := opts.Queue
	fs := &FS{q: q, ro: opts.ReadOnly || dev.ReadOnly(), dirty: map[*Node]bool{},
		kick: make(chan struct{}, 1), orphanFreed: make(chan struct{})}
	loc, err := format.LocateVolume(dev, opts.Partition)
	if err != nil {
		return nil, nil, err
	}
	fs.loc = loc
	fs.dev = format.VolumeDevice(dev, loc)
	fs.blocks = uint64(loc.Size / format.BlockSize)
	if fs.blocks < 2 {
		return nil, nil, fmt.Errorf("%s: %d bytes is too small for TFS", loc.What, loc.Size)
	}
	fs.log, fs.free, err = format.ReadLog(fs.dev, fs.blocks, salvage)
	if err != nil && !salvage {
		return nil, nil, fmt.Errorf("%s: %w (tfsmount fsck --repair ends the log before the first record it cannot read)", loc.What, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", loc.What, err)
	}
	d := fs.log.Dec
	var rootErr string
	var rootT *format.Tuple
	rootT, _ = d.Object(1).(*format.Tuple)
	switch {
	case d.Next() < 2:
		rootErr = "the log holds no root tuple (index 1 missing)"
	case rootT == nil:
		rootErr = fmt.Sprintf("index 1 is a %s, not the root tuple", format.KindName(d.Object(1)))
	default:
		if _, ok := rootT.Attrs["children"].(*format.Tuple); !ok {
			rootErr = "the root tuple has no children tuple"
		}
	}
	if rootErr != "" {
		if t := fs.log.Torn; t != nil {
			rootErr += fmt.Sprintf(" (the log was ended at block %d byte %d: %s)", t.At.Ext, t.At.Pos, t.Why)
		}
		return nil, nil, fmt.Errorf("%s: %w: %s", loc.What, format.ErrCorrupt, rootErr)
	}
	if salvage {
		fs.logUsed = fs.free.Clone()
	}
	return fs, fs.buildModel(rootT), nil
}

// buildModel builds the nodes from the tuple graph under rootT, reserving
// their extents in fs.free, and returns the problems found.
func (fs *FS) buildModel(rootT *format.Tuple) []problem {
	fs.skipped = nil
	b := &builder{fs: fs, used: fs.free}
	fs.root = b.build(rootT)
	fs.numberTree(fs.log.Dec, b.nodes)
	// References to undefined indices the walk did not meet as entries.
	for _, m := range fs.log.Dec.Missing {
		if v, ok := m.Tuple.Attrs[m.Name].(format.MissingRef); !ok || v != m.Ref || fs.skipped[m.Tuple][m.Name] {
			continue
		}
		b.add(dropAttr(m.Tuple, m.Name), "log", "attribute %q refers to index %d, which the log never defined", m.Name, m.Ref.Idx)
	}
	if b.dropped > 0 {
		b.problems = append(b.problems, problem{Where: fs.loc.What, What: fmt.Sprintf("%d more problems not listed (fsck --repair repairs the first %d; run it again)", b.dropped, maxProblems)})
	}
	return b.problems
}

// start checks the model and, for a writable mount, prepares the writer,
// the data cache and the flush timer.
func (fs *FS) start(opts Options, problems []problem) error {
	fs.logf = opts.Logf
	if fs.q == nil {
		fs.q = bh.NewQueue(2)
		fs.ownQueue = true
	}
	var err error
	if len(problems) > 0 {
		if !fs.ro {
			// Appending to a log whose model skipped entries would make
			// what Nanos sees and what the mount shows differ; repair
			// first, or look at the rest read-only.
			var msgs []string
			for i, p := range problems {
				if i == 3 {
					msgs = append(msgs, fmt.Sprintf("and %d more", len(problems)-3))
					break
				}
				msgs = append(msgs, p.String())
			}
			return fmt.Errorf("%s: %w: %d malformed entries or extents (%s): mount it read-only (-o ro) to read the rest, or repair it with tfsmount fsck --repair",
				fs.loc.What, format.ErrCorrupt, len(problems), strings.Join(msgs, "; "))
		}
		if opts.Logf != nil {
			for i, p := range problems {
				if i == maxProblemLogs {
					opts.Logf("%s: and %d more malformed entries or extents (tfsmount fsck lists them)", fs.loc.What, len(problems)-i)
					break
				}
				opts.Logf("%s: %s: %s (skipped; tfsmount fsck --repair removes it)", fs.loc.What, p.Where, p.What)
			}
		}
	}
	fs.delay = opts.WritebackDelay
	if fs.delay <= 0 {
		fs.delay = pagecache.DefaultWritebackDelay
	}
	if fs.data, err = newDataCache(fs, opts); err != nil {
		return err
	}
	if fs.ro {
		return nil
	}
	fs.w = newLogWriter(fs)
	if fs.log.Torn != nil && !fs.log.Dangling {
		if err := fs.endTornLog(); err != nil {
			return err
		}
	}
	if fs.log.Dangling || fs.log.Dec.DupNames {
		// A value cut off at the end of the log (docs/format.md,
		// "Reading the log") or a name written immediately twice
		// ("The dictionary"): appending would make the next reader fail or
		// collide indices; rebuild the log first.
		if err := fs.compactLocked(); err != nil {
			return fmt.Errorf("rebuild the log before appending: %w", err)
		}
	}
	fs.stop = make(chan struct{})
	fs.stopped = make(chan struct{})
	go fs.flusher()
	return nil
}

// maxProblemLogs bounds the lines a read-only mount logs about malformed
// entries.
const maxProblemLogs = 20

// endTornLog writes an END_OF_LOG where replay ended a torn log, so the
// image on the device ends there too (one block, FUA). Before any mount
// appends.
func (fs *FS) endTornLog() error {
	l := fs.log
	l.LastBuf[l.EndPos] = format.RecEndOfLog
	blk := l.EndPos / format.BlockSize * format.BlockSize
	if err := blockdev.WriteAtFUA(fs.dev, l.LastBuf[blk:blk+format.BlockSize], logOffset(l.Last(), blk)); err != nil {
		return fmt.Errorf("end the torn log at block %d byte %d: %w", l.Last().Start, l.EndPos, err)
	}
	l.Torn = nil
	return nil
}

func (fs *FS) closeQueue() {
	if fs.ownQueue {
		fs.q.Close()
	}
}

// Label is the volume label.
func (fs *FS) Label() string { return fs.log.Label }

// UUID is the volume UUID.
func (fs *FS) UUID() [16]byte { return fs.log.UUID }

// Root is the root directory.
func (fs *FS) Root() *Node { return fs.root }

// StatFS describes space on the volume.
func (fs *FS) StatFS() StatFS {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	free := fs.free.FreeBlocks() + fs.freeingBlocks
	free -= min(free, fs.reserved+fs.logReserveShortfall())
	return StatFS{BlockSize: format.BlockSize, Blocks: fs.blocks, Free: free, NameMax: maxNameLen}
}

func (fs *FS) children(dir *Node) (*format.Tuple, error) {
	if dir.kind != KindDir {
		return nil, errnoErr("not a directory", syscall.ENOTDIR)
	}
	c, ok := dir.t.Attrs["children"].(*format.Tuple)
	if !ok {
		return nil, corruptErr("directory without children")
	}
	return c, nil
}

// lookupLocked finds name in dir; nil if absent.
func (fs *FS) lookupLocked(dir *Node, name string) (*Node, error) {
	c, err := fs.children(dir)
	if err != nil {
		return nil, err
	}
	n := nodeOf(c.Attrs[name])
	if n == nil || fs.skipped[c][name] {
		return nil, nil
	}
	return n, nil
}

// Lookup finds name in dir.
func (fs *FS) Lookup(dir *Node, name string) (*Node, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if name == "." {
		return dir, nil
	}
	if name == ".." {
		if dir.kind != KindDir {
			return nil, errnoErr("not a directory", syscall.ENOTDIR)
		}
		return dir.parent, nil
	}
	n, err := fs.lookupLocked(dir, name)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return nil, errnoErr(fmt.Sprintf("lookup %q", name), syscall.ENOENT)
	}
	return n, nil
}

// ReadDir lists dir sorted by name (entries the model skipped as invalid
// are not shown).
func (fs *FS) ReadDir(dir *Node) ([]DirEntry, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	c, err := fs.children(dir)
	if err != nil {
		return nil, err
	}
	out := make([]DirEntry, 0, len(c.Attrs))
	for name, v := range c.Attrs {
		n := nodeOf(v)
		if n == nil || fs.skipped[c][name] {
			continue
		}
		out = append(out, DirEntry{Name: name, Kind: n.kind, Ino: n.ino, Node: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Resolve looks up an absolute guest path without following symlinks.
func (fs *FS) Resolve(path string) (*Node, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, errnoErr(fmt.Sprintf("path %q is not absolute", path), syscall.EINVAL)
	}
	n := fs.root
	for _, comp := range strings.Split(path, "/") {
		if comp == "" {
			continue
		}
		next, err := fs.Lookup(n, comp)
		if err != nil {
			return nil, fmt.Errorf("resolve %q: %w", path, err)
		}
		n = next
	}
	return n, nil
}

// Readlink returns a symlink's target.
func (fs *FS) Readlink(n *Node) (string, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if n.kind != KindSymlink {
		return "", errnoErr("not a symlink", syscall.EINVAL)
	}
	s, ok := format.TextOf(n.t.Attrs["linktarget"])
	if !ok {
		return "", corruptErr("linktarget is not a string")
	}
	return s, nil
}

// Sync writes back all data, then the log, then flushes the device.
func (fs *FS) Sync() error {
	return fs.flush(true)
}

// Close writes everything back and releases the mount.
func (fs *FS) Close() error {
	fs.mu.Lock()
	if fs.closed.Load() {
		fs.mu.Unlock()
		return nil
	}
	fs.closed.Store(true)
	fs.mu.Unlock()
	if fs.stop != nil {
		close(fs.stop)
		<-fs.stopped
	}
	var errs []error
	if !fs.ro {
		errs = append(errs, fs.flush(true))
	}
	errs = append(errs, fs.data.Close())
	if !fs.ro {
		// Closing the cache may have committed late write-backs.
		fs.mu.Lock()
		idle := fs.w.idle() && len(fs.dirty) == 0
		fs.mu.Unlock()
		if !idle {
			errs = append(errs, fs.flushLog(true, nil))
		}
	}
	fs.closeQueue()
	return errors.Join(errs...)
}

// flusher writes staged metadata every delay.
func (fs *FS) flusher() {
	defer close(fs.stopped)
	t := time.NewTicker(fs.delay)
	defer t.Stop()
	for {
		select {
		case <-fs.stop:
			return
		case <-fs.kick:
			_ = fs.flush(false)
		case <-t.C:
			fs.mu.Lock()
			idle := fs.w.idle() && len(fs.dirty) == 0
			fs.mu.Unlock()
			if !idle {
				_ = fs.flush(false) // errors are sticky in the writer and reported on sync
			}
		}
	}
}

func (fs *FS) checkWritable() error {
	if fs.ro {
		return errnoErr("read-only mount", syscall.EROFS)
	}
	if err := fs.lostWrites.Load(); err != nil {
		return *err
	}
	if fs.closed.Load() {
		return errnoErr("filesystem closed", syscall.EIO)
	}
	return nil
}

// noteLostWrites takes the mount out of writing when err says the device
// lost completed writes (see FS.lostWrites), and returns err.
func (fs *FS) noteLostWrites(err error) error {
	if err == nil || !errors.Is(err, blockdev.ErrWritesLost) {
		return err
	}
	stop := errnoErr("the device lost writes it had acknowledged before they were flushed "+
		"(an NBD server restarted without saving its cache?); nothing more is written: "+
		"unmount, and mount again to see the volume as of its last good flush", syscall.EIO)
	if fs.lostWrites.CompareAndSwap(nil, &stop) && fs.logf != nil {
		fs.logf("tfsmount: %v", stop)
	}
	return err
}
