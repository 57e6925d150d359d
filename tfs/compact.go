package tfs

import (
	"fmt"
	"hash/crc32"
	"syscall"

	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// Log compaction (docs/format.md and docs/crash-ordering.md, "Compaction"):
// the whole tree is written as one value into a new chain in free space, and
// a single write of block 0 switches the volume to it. A crash before that
// write leaves the old log in force; after it, the old extensions are
// garbage in free space.

// Compact rebuilds the log now.
func (fs *FS) Compact() error {
	if err := fs.flush(true); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	fs.logIO.Lock()
	defer fs.logIO.Unlock()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.checkWritable(); err != nil {
		return err
	}
	return fs.compactLocked()
}

// LogBlocks is the number of blocks the log's extensions occupy.
func (fs *FS) LogBlocks() uint64 {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	exts := fs.log.Exts
	if fs.w != nil {
		exts = fs.w.chain
	}
	var n uint64
	for _, e := range exts {
		n += e.NBlocks
	}
	return n
}

// compactLocked runs with fs.logIO and fs.mu held (or before the mount is
// shared): it writes the log itself.
func (fs *FS) compactLocked() error {
	old := fs.w
	// Sizes and times changed in memory go straight into the snapshot.
	for n := range fs.dirty {
		if n.kind == KindFile && n.links > 0 {
			n.t.Attrs["filelength"] = format.IntOf(uint64(n.size.Load()))
			n.loggedSize = n.size.Load()
		}
		n.timesDirty = false
		delete(fs.dirty, n)
	}
	start := old.compactArea
	old.compactArea = 0
	if start == 0 {
		s, ok := fs.free.Alloc(format.ExtBlocks)
		switch {
		case ok:
			start = s
		case old.nextArea != 0:
			// The area kept for the next extension will do.
			start, old.nextArea = old.nextArea, 0
		default:
			return errnoErr("no free blocks for a compacted log", syscall.ENOSPC)
		}
	}
	enc := format.NewEncoder()
	nw := &logWriter{fs: fs, enc: enc, ext: format.Extension{Start: start, NBlocks: format.ExtBlocks, Version: 5},
		buf: make([]byte, format.ExtBlocks*format.BlockSize), dirtyFrom: 0, session: true, nextArea: old.nextArea,
		chain: []format.Extension{{Start: 0, NBlocks: 1, Version: 5}, {Start: start, NBlocks: format.ExtBlocks, Version: 5}}}
	old.nextArea = 0
	nw.used = copy(nw.buf, format.ExtensionHeader(format.ExtBlocks))
	nw.buf[nw.used] = format.RecEndOfLog
	entry := enc.Value(nil, fs.root.t, map[any]bool{}, false)
	err := nw.stage(entry)
	if err == nil {
		// The whole new chain, a flush, then block 0 with FUA: the switch
		// is the one write of block 0 (ordering rule 1).
		var b logBatch
		if b, err = nw.take(); err == nil {
			err = fs.commitBlocks(b.blockWrites(), blockdev.Write{Off: 0, Data: format.InitialBlock(fs.log.UUID, fs.log.Label, start, format.ExtBlocks)}, true)
		}
	}
	if err != nil {
		// The old chain is still the log; give back what the new one took
		// (nothing on the disk points at it).
		for _, e := range nw.chain[1:] {
			_ = fs.free.Free(e.Start, e.NBlocks)
		}
		old.nextArea, old.compactArea = nw.nextArea, 0
		old.ensureAreas()
		return fmt.Errorf("compact the log: %w", err)
	}
	// The new log is durable: the old chain, and every block freed by a
	// record of the old log, belong to nobody now.
	oldChain := make([][2]uint64, 0, len(old.chain)-1)
	for _, e := range old.chain[1:] {
		oldChain = append(oldChain, [2]uint64{e.Start, e.NBlocks})
	}
	fs.discard(append(oldChain, fs.freeing...))
	fs.toAllocator(oldChain)
	fs.releaseFreed(fs.freeing)
	fs.freeing = nil
	fs.renumberAfterCompaction(old, crc32.Checksum(entry, format.Castagnoli))
	nw.entries = enc.Next()
	nw.obsolete = 0
	nw.ensureAreas()
	fs.w = nw
	fs.log.Exts = nw.chain
	return nil
}
