package tfs

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// Appending to the log the way Nanos does (docs/format.md,
// "Appending to the log"). Records are staged into in-memory copies of the
// extensions and written by a flush; the object graph is updated at staging
// time.

const (
	linkMax      = 21 // LOG_EXTENSION_LINK with two 10-byte varints
	hdrMax       = 21 // a record type byte and two 10-byte varints
	minChunkRoom = hdrMax + 32

	maxStaged = 32 << 20

	// Compaction policy (docs/format.md, "Compaction").
	compactObsolete = 8192
)

// extWrite is a byte range of an extension image waiting to be written:
// image bytes [from, to), with buf holding the image from byte base on.
type extWrite struct {
	ext      format.Extension
	buf      []byte
	base     int
	from, to int
}

// logWriter appends records to the log.
//
// Invariant: buf is the image of the current extension ext, buf[used] is
// the END_OF_LOG byte once anything is staged, and bytes [dirtyFrom, used]
// differ from what is on disk; done holds older extensions (ending with
// their link) still to be written.
type logWriter struct {
	fs        *FS
	enc       *format.Encoder
	ext       format.Extension
	buf       []byte
	used      int
	dirtyFrom int // -1: nothing staged in buf
	done      []extWrite
	chain     []format.Extension // the log's extensions in order, block 0 first
	session   bool               // END_OF_SEGMENT already placed in this session
	// Pre-reserved 1024-block areas, in memory only: the next log
	// extension and the first extension of a compacted log. 0 = none.
	nextArea, compactArea uint64
	entries, obsolete     uint64
	// err is sticky: a record that could not be staged (no room for a
	// new extension) leaves the log behind memory; every sync reports it.
	err error
	// dataFirst: a record staged since the last take points at file data
	// (CommitWrite), so the batch must not be published before a flush.
	dataFirst bool
}

func newLogWriter(fs *FS) *logWriter {
	l := fs.log
	w := &logWriter{fs: fs, enc: format.EncoderFrom(l.Dec), ext: l.Last(), buf: l.LastBuf, used: l.EndPos, dirtyFrom: -1,
		entries: l.Dec.Entries, obsolete: l.Dec.Obsolete, chain: append([]format.Extension(nil), l.Exts...)}
	w.ensureAreas()
	return w
}

func (w *logWriter) idle() bool { return w.dirtyFrom < 0 && len(w.done) == 0 }

// ensureLogAreas reserves the two pre-reserved log areas if missing and
// reports whether both are held.
func (fs *FS) ensureLogAreas() bool {
	if fs.w == nil {
		return false
	}
	return fs.w.ensureAreas()
}

func (w *logWriter) ensureAreas() bool {
	if w.nextArea == 0 {
		if s, ok := w.fs.free.Alloc(format.ExtBlocks); ok {
			w.nextArea = s
		}
	}
	if w.compactArea == 0 {
		if s, ok := w.fs.free.Alloc(format.ExtBlocks); ok {
			w.compactArea = s
		}
	}
	return w.nextArea != 0 && w.compactArea != 0
}

// logReserveShortfall is how many blocks of the 2×1024 log reserve are not
// held in pre-reserved areas and must be kept free by data allocation.
func (fs *FS) logReserveShortfall() uint64 {
	if fs.w == nil {
		return 0
	}
	var s uint64
	if fs.w.nextArea == 0 {
		s += format.ExtBlocks
	}
	if fs.w.compactArea == 0 {
		s += format.ExtBlocks
	}
	return s
}

// extend links the current extension to a new one and continues there.
func (w *logWriter) extend() error {
	fs := w.fs
	start := w.nextArea
	w.nextArea = 0
	if start == 0 {
		s, ok := fs.free.Alloc(format.ExtBlocks)
		if !ok {
			return errnoErr("no free blocks for a new log extension", syscall.ENOSPC)
		}
		start = s
	}
	w.ensureAreas()
	if w.dirtyFrom < 0 {
		w.dirtyFrom = w.used
	}
	b := append(w.buf[:w.used], format.RecLink)
	b = format.PutVarint(b, start)
	b = format.PutVarint(b, format.ExtBlocks)
	b = append(b, format.RecEndOfLog)
	w.done = append(w.done, extWrite{ext: w.ext, buf: w.buf, from: w.dirtyFrom, to: len(b)})
	w.ext = format.Extension{Start: start, NBlocks: format.ExtBlocks, Version: 5}
	w.buf = make([]byte, format.ExtBlocks*format.BlockSize)
	w.used = copy(w.buf, format.ExtensionHeader(format.ExtBlocks))
	w.buf[w.used] = format.RecEndOfLog
	w.dirtyFrom = 0
	w.session = true
	w.chain = append(w.chain, w.ext)
	return nil
}

// stage frames one encoded entry into the log.
func (w *logWriter) stage(entry []byte) error {
	if !w.session {
		w.session = true
		if w.ext.Version != 5 {
			// Nanos never appends v4 records: start a v5 extension.
			if err := w.extend(); err != nil {
				return err
			}
		} else {
			// The old END_OF_LOG becomes END_OF_SEGMENT: a new session.
			w.buf[w.used] = format.RecEndOfSegment
			w.dirtyFrom = w.used
			w.used++
		}
	}
	if w.dirtyFrom < 0 {
		w.dirtyFrom = w.used
	}
	total := uint64(len(entry))
	first := true
	for len(entry) > 0 || first {
		size := len(w.buf)
		if w.used+linkMax+minChunkRoom >= size {
			if err := w.extend(); err != nil {
				return err
			}
			size = len(w.buf)
		}
		n := min(len(entry), size-w.used-linkMax-hdrMax)
		b := w.buf[:w.used]
		if first {
			b = append(b, format.RecAvailable)
			b = format.PutVarint(b, total)
		} else {
			b = append(b, format.RecExtended)
		}
		b = format.PutVarint(b, uint64(n))
		b = append(b, entry[:n]...)
		entry = entry[n:]
		w.used = len(b)
		first = false
	}
	w.buf[w.used] = format.RecEndOfLog
	return nil
}

// logBatch is what one log write takes from the writer: byte ranges of
// extension images, oldest extension first, block-aligned. Ranges of
// extensions the writer has moved past point into their final images,
// which never change again; the range of the current extension is a copy,
// because staging goes on appending to its image while the batch is being
// written without fs.mu.
type logBatch struct {
	writes []extWrite
	// dataFirst: some record of the batch points at file data written
	// since the last flush (CommitWrite), which must be durable first.
	dataFirst bool
}

func (b logBatch) empty() bool { return len(b.writes) == 0 }

// take moves every staged byte range into a batch; the writer then has
// nothing staged. Called with fs.mu held.
func (w *logWriter) take() (logBatch, error) {
	if w.err != nil {
		return logBatch{}, w.err
	}
	writes := w.done
	if w.dirtyFrom >= 0 {
		// Only the blocks to write are copied.
		from := w.dirtyFrom / format.BlockSize * format.BlockSize
		to := min((w.used+1+format.BlockSize-1)/format.BlockSize*format.BlockSize, len(w.buf))
		img := append([]byte(nil), w.buf[from:to]...)
		writes = append(writes, extWrite{ext: w.ext, buf: img, base: from, from: w.dirtyFrom, to: w.used + 1})
	}
	b := logBatch{writes: writes, dataFirst: w.dataFirst && len(writes) > 0}
	w.done = nil
	w.dirtyFrom = -1
	w.dataFirst = false
	return b, nil
}

// blockWrites are the writes of whole blocks that carry the batch, one per
// extension, oldest first.
func (b logBatch) blockWrites() []blockdev.Write {
	ws := make([]blockdev.Write, 0, len(b.writes))
	for _, x := range b.writes {
		from := x.from / format.BlockSize * format.BlockSize
		to := min((x.to+format.BlockSize-1)/format.BlockSize*format.BlockSize, x.base+len(x.buf))
		ws = append(ws, blockdev.Write{Off: logOffset(x.ext, from), Data: x.buf[from-x.base : to-x.base]})
	}
	return ws
}

// blocks splits a batch into the block writes that carry it and the one
// write that publishes it: the block holding the batch's first byte, where
// the log's END_OF_LOG was. Until that block changes, a reader stops at the
// old end and never looks at the others, so they may be written in any
// order (ordering rule 1, in the package comment).
func (b logBatch) blocks() (rest []blockdev.Write, publish blockdev.Write) {
	rest = b.blockWrites()
	first := &rest[0]
	publish = blockdev.Write{Off: first.Off, Data: first.Data[:format.BlockSize]}
	if first.Data = first.Data[format.BlockSize:]; len(first.Data) == 0 {
		rest = rest[1:]
	} else {
		first.Off += format.BlockSize
	}
	return rest, publish
}

// logOffset is the device byte offset of byte off of extension ext.
func logOffset(ext format.Extension, off int) int64 {
	return int64(ext.Start)*format.BlockSize + int64(off)
}

// writeBatch makes a batch part of the log on the device, all of it or
// none of it whatever the device reorders: every block but the publishing
// one, a flush, then the publishing block as a FUA write. dataFirst (the
// batch points at new file data, or an fsync asked for the data written
// before it) also wants a flush before the publishing write. It runs
// without fs.mu; fs.logIO keeps log writes in order.
func (fs *FS) writeBatch(b logBatch, dataFirst bool) error {
	rest, publish := b.blocks()
	return fs.commitBlocks(rest, publish, dataFirst || b.dataFirst)
}

// commitBlocks writes rest, flushes, and writes publish with FUA. A crash
// at any moment leaves publish's old content (and whatever rest reached,
// which nothing reads) or all of it durable.
func (fs *FS) commitBlocks(rest []blockdev.Write, publish blockdev.Write, dataFirst bool) error {
	if err := fs.lostWrites.Load(); err != nil {
		return *err
	}
	return fs.noteLostWrites(fs.commitBlocksOnce(rest, publish, dataFirst))
}

func (fs *FS) commitBlocksOnce(rest []blockdev.Write, publish blockdev.Write, dataFirst bool) error {
	if err := blockdev.WriteMany(fs.dev, rest); err != nil {
		return fmt.Errorf("write the log: %w", err)
	}
	if (len(rest) > 0 && orderRules.publishLast) || (dataFirst && orderRules.dataFirst) {
		if err := blockdev.Flush(fs.dev); err != nil {
			return fmt.Errorf("flush before the log's publishing write: %w", err)
		}
	}
	if err := blockdev.WriteAtFUA(fs.dev, publish.Data, publish.Off); err != nil {
		return fmt.Errorf("write the log's publishing block at byte %d: %w", publish.Off, err)
	}
	if dataFirst && !orderRules.dataFirst {
		// Only with the rule turned off by a test: what an fsync wrote is
		// still made durable, after the log.
		if err := blockdev.Flush(fs.dev); err != nil {
			return fmt.Errorf("flush: %w", err)
		}
	}
	return nil
}

// requeue gives a batch that may not have reached the disk back to the
// writer, so the next flush writes it again. Records staged since take
// only ever appended: the current extension's image (live, in w.buf or in
// a done entry if the writer has extended since) holds everything the
// batch's copy held. Called with fs.mu held.
func (w *logWriter) requeue(b logBatch) {
	var older []extWrite
	for _, x := range b.writes {
		switch {
		case x.ext.Start == w.ext.Start:
			if w.dirtyFrom < 0 || x.from < w.dirtyFrom {
				w.dirtyFrom = x.from
			}
		case w.markDone(x):
		default:
			older = append(older, x)
		}
	}
	w.done = append(older, w.done...)
	w.dataFirst = w.dataFirst || b.dataFirst
}

// markDone widens the done entry of x's extension to cover x, if there is
// one.
func (w *logWriter) markDone(x extWrite) bool {
	for i := range w.done {
		if d := &w.done[i]; d.ext.Start == x.ext.Start {
			d.from = min(d.from, x.from)
			return true
		}
	}
	return false
}

// logEntry encodes and stages a whole entry built by f.
func (fs *FS) logEntry(f func(e *format.Encoder, b []byte) []byte) error {
	if fs.w == nil {
		return errnoErr("read-only mount", syscall.EROFS)
	}
	// Bound what waits in memory when log writes keep failing (Nanos
	// refuses changes beyond 32 MiB staged, too).
	if fs.w.staged() > maxStaged {
		return errnoErr("too much metadata waiting for the log to be written", syscall.ENOSPC)
	}
	b := f(fs.w.enc, make([]byte, 0, 64))
	if err := fs.w.stage(b); err != nil {
		return err
	}
	// Like Nanos, write at once when half an extension is staged.
	if fs.w.staged() > format.ExtBlocks*format.BlockSize/2 {
		select {
		case fs.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// staged is the number of bytes waiting to be written.
func (w *logWriter) staged() int {
	n := 0
	for _, x := range w.done {
		n += x.to - x.from
	}
	if w.dirtyFrom >= 0 {
		n += w.used + 1 - w.dirtyFrom
	}
	return n
}

// logEAV stages EAV(target, name, v) and applies it to the graph. A target
// the log does not know (an unlinked file dropped by a compaction) is
// unreachable on disk, so only memory changes.
func (fs *FS) logEAV(target *format.Tuple, name string, v format.Value, shallow bool) error {
	old, had := target.Attrs[name]
	if v == nil {
		delete(target.Attrs, name)
	} else {
		target.Attrs[name] = v
	}
	w := fs.w
	if w == nil || !w.enc.Has(target) {
		return nil
	}
	w.entries++
	if v == nil {
		w.obsolete += 2
	} else if had && old != nil {
		w.obsolete++
	}
	if err := fs.logEntry(func(e *format.Encoder, b []byte) []byte { return e.EAV(b, target, name, v, shallow) }); err != nil {
		// Keep memory and log in step: undo the change.
		if had {
			target.Attrs[name] = old
		} else {
			delete(target.Attrs, name)
		}
		return err
	}
	return nil
}

// flush makes the state durable: data first (the cache writes back and
// commits extents), then pending attributes and the log, then a device
// flush. full also waits for the device flush even if nothing was staged.
func (fs *FS) flush(full bool) error {
	if fs.ro {
		return nil
	}
	return fs.flushLog(full, fs.data.Sync())
}

// flushLog is flush without the data write-back, for callers that wrote
// the data they care about already (fsync). Records in the log only ever
// reference written blocks (extents are logged at CommitWrite), so this
// never exposes unwritten data; sizes of other files may run ahead of
// their data, which then reads as holes.
func (fs *FS) flushLog(full bool, derr error) error {
	fs.logIO.Lock()
	defer fs.logIO.Unlock()
	if err := fs.writeLog(full, derr, fs.stageDirtyLocked); err != nil {
		return err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.w != nil && fs.w.obsolete >= compactObsolete && fs.w.entries <= 2*fs.w.obsolete {
		return fs.compactLocked()
	}
	return nil
}

// writeLog stages what stage adds (under fs.mu), then writes everything
// staged (writeBatch) with fs.mu released, so file reads and writes never
// wait for the device; full also makes every write completed before it
// durable, even if nothing was staged. Blocks freed by records staged
// before the batch was taken go back to the allocator once the batch is
// durable, and not before (ordering rule 3). The caller holds fs.logIO.
func (fs *FS) writeLog(full bool, derr error, stage func() error) error {
	fs.mu.Lock()
	if fs.w == nil {
		fs.mu.Unlock()
		return derr
	}
	serr := stage()
	b, werr := fs.w.take()
	freed := fs.freeing
	fs.freeing = nil
	fs.mu.Unlock()

	var ferr error
	if werr == nil && !b.empty() {
		werr = fs.writeBatch(b, full)
	} else if full {
		ferr = fs.noteLostWrites(blockdev.Flush(fs.dev))
	}
	durable := werr == nil && ferr == nil
	if durable && len(freed) > 0 {
		// The freed blocks belong to nobody now, and nobody can be given
		// them before they reach the allocator below: discard them
		// before taking fs.mu, so that no other operation waits for the
		// device's discards.
		fs.discard(freed)
	}

	fs.mu.Lock()
	defer fs.mu.Unlock()
	if !durable {
		// Nothing says the batch is on the disk: write it again next time.
		fs.w.requeue(b)
		fs.freeing = append(freed, fs.freeing...)
	} else {
		// The batch is durable, and so is every record staged before it
		// (an empty batch means nothing was left to write).
		fs.releaseFreed(freed)
	}
	return errors.Join(derr, serr, werr, ferr)
}

// stageDirtyLocked logs the sizes and times that changed in memory only.
func (fs *FS) stageDirtyLocked() error {
	var errs []error
	for n := range fs.dirty {
		if n.links == 0 && n != fs.root {
			delete(fs.dirty, n) // removed: nothing on disk to update
			continue
		}
		if n.kind == KindFile && n.size.Load() != n.loggedSize {
			if err := fs.logEAV(n.t, "filelength", format.IntOf(uint64(n.size.Load())), false); err != nil {
				errs = append(errs, err)
				continue
			}
			n.loggedSize = n.size.Load()
		}
		if n.timesDirty {
			n.timesDirty = false
			for _, a := range []string{"mtime", "atime"} {
				if v, ok := n.t.Attrs[a]; ok {
					if err := fs.logEAV(n.t, a, v, false); err != nil {
						errs = append(errs, err)
					}
				}
			}
		}
		delete(fs.dirty, n)
	}
	return errors.Join(errs...)
}
