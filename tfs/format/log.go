package format

import (
	"errors"
	"fmt"
	"hash/crc32"
	"unicode/utf8"

	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/heap"
)

// The metadata log (docs/format.md, "Reading the log"): a chain of
// extensions holding records that carry encoded values. This file reads it.

const (
	BlockSize = 512

	RecEndOfLog     = 0x01
	RecAvailable    = 0x02
	RecExtended     = 0x03
	RecEndOfSegment = 0x04
	RecLink         = 0x05

	ExtBlocks = 1024 // every extension after block 0 that Nanos or tfsmount makes
	// maxLinkBlocks bounds the extension a link may announce: replay reads
	// an extension whole, and Nanos, ops and tfsmount all make 1024-block
	// ones, so a larger claim is a crafted image asking for memory.
	maxLinkBlocks = 16 * ExtBlocks
	MaxLabel      = 31
)

// ExtensionHeader is the header that starts every extension after block 0:
// the magic, version 5 and the extension's length in blocks.
func ExtensionHeader(size uint64) []byte {
	b := append([]byte(Magic), 5)
	return PutVarint(b, size)
}

// Castagnoli is the CRC-32C table. The checksum of a log's first record
// tells log generations apart (tfs uses it in inode numbers).
var Castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MaxMissing bounds the references to undefined indices a Decoder lists:
// a hostile log could otherwise make the list as long as the log.
const MaxMissing = 10000

// Extension is one contiguous run of log blocks.
type Extension struct {
	Start, NBlocks uint64
	Version        int
}

// Log is what replay learns about the log beyond the object graph: enough to
// append to it byte-compatibly (docs/format.md, "Appending to the log").
type Log struct {
	UUID    [16]byte
	Label   string
	Exts    []Extension // the chain in order; exts[0] is block 0
	LastBuf []byte      // contents of the last extension
	EndPos  int         // offset of END_OF_LOG in lastBuf
	// Dangling: the log ended inside a value (docs/format.md,
	// "Reading the log"); appends would make the next mount fail, so the
	// writer rebuilds the log first.
	Dangling bool
	// Torn: a crash left the log with a Torn tail, which replay ended at
	// (nil: the log ended at its END_OF_LOG).
	Torn    *TornTail
	Dec     *Decoder
	Records uint64 // complete values decoded
	// FirstSum is the CRC-32C of the first value (the root record): it
	// names this log generation (ino.go). A compaction sets it for the
	// log it writes.
	FirstSum uint32
}

func (l *Log) Last() Extension { return l.Exts[len(l.Exts)-1] }

// extHeader parses an extension header at b[0:]; for the initial extension
// it also returns the UUID and label. It returns the offset after it.
func extHeader(b []byte, initial bool) (version int, size uint64, uuid [16]byte, label string, pos int, err error) {
	if len(b) < len(Magic) || string(b[:len(Magic)]) != Magic {
		n := min(len(b), len(Magic))
		return 0, 0, uuid, "", 0, fmt.Errorf("bad magic % x, want %q: %w", b[:n], Magic, errNoHeader)
	}
	pos = len(Magic)
	v, pos, err := getVarint(b, pos)
	if err != nil {
		return 0, 0, uuid, "", pos, fmt.Errorf("version: %w", err)
	}
	if v != 4 && v != 5 {
		return 0, 0, uuid, "", pos, fmt.Errorf("version %d is not 4 or 5", v)
	}
	size, pos, err = getVarint(b, pos)
	if err != nil {
		return 0, 0, uuid, "", pos, fmt.Errorf("size: %w", err)
	}
	if !initial {
		return int(v), size, uuid, "", pos, nil
	}
	if len(b)-pos < 16 {
		return 0, 0, uuid, "", pos, fmt.Errorf("uuid at byte %d: %w", pos, errShort)
	}
	copy(uuid[:], b[pos:pos+16])
	pos += 16
	end := -1
	for i := pos; i < len(b) && i <= pos+MaxLabel; i++ {
		if b[i] == 0 {
			end = i
			break
		}
	}
	if end < 0 {
		return 0, 0, uuid, "", pos, fmt.Errorf("label at byte %d has no NUL within %d bytes", pos, MaxLabel+1)
	}
	label = string(b[pos:end])
	if !utf8.ValidString(label) {
		return 0, 0, uuid, "", pos, fmt.Errorf("label at byte %d is not valid UTF-8", pos)
	}
	return int(v), size, uuid, label, end + 1, nil
}

// LogPos is a place in the log: byte pos of the extension at block ext.
type LogPos struct {
	Ext uint64
	Pos int
}

// TornTail says where a log that a crash cut short was ended, and why.
type TornTail struct {
	At  LogPos
	Why string
}

// logFailure is where replay stopped on something it could not read: the
// extension it was in (its image, and the record boundaries seen there)
// and the record that failed.
type logFailure struct {
	err    error
	ext    Extension
	buf    []byte // nil when the extension itself could not be read
	starts []int  // record start offsets in buf, in order; the failing record last
	ends   []int  // where each of those records ends (the failing one: as far as it could be read)
	// link, if not nil: the failure is reading the extension a link
	// announced, and this is where the link record is.
	link *LogPos
}

// ReadLog replays the log of a volume of volBlocks blocks and returns it
// with the blocks it occupies reserved in a new allocator of the volume.
// Every extension it follows is reserved, which therefore rejects links
// that overlap the chain itself (cycles) or block 0. Memory is bounded by
// the chain, and the chain by the volume, since extensions are disjoint.
//
// A log that a crash left with a torn tail (tornTailAt) ends where the
// tail begins, and l.torn says so. Anything else unreadable is an error,
// unless salvage is set (fsck --repair): then the log ends before the
// first record that cannot be read, wherever it is.
func ReadLog(dev blockdev.Device, volBlocks uint64, salvage bool) (*Log, *heap.Ranges, error) {
	used := heap.NewRanges(volBlocks)
	l, fail := Replay(dev, volBlocks, used, nil)
	if fail == nil {
		return l, used, nil
	}
	at, why, ok := tornTailAt(fail)
	if !ok && salvage {
		at, ok = salvagePoint(fail)
		why = "unreadable"
	}
	if !ok {
		return nil, nil, fail.err
	}
	// Replay again up to the cut: the failing records may have changed the
	// object graph before they failed.
	used = heap.NewRanges(volBlocks)
	l, fail2 := Replay(dev, volBlocks, used, &at)
	if fail2 != nil {
		return nil, nil, fail2.err
	}
	l.Torn = &TornTail{At: at, Why: fmt.Sprintf("%s: %v", why, fail.err)}
	return l, used, nil
}

// tornTailAt decides whether a replay failure is the torn tail a crash can
// leave, and where the log then ends. Two shapes are provably a tail:
//   - a link to an extension that is not there (no TFS header at all): the
//     link was written and the extension it announces never was, so
//     nothing can follow it; the log ends where the link is;
//   - a last extension whose blocks from some point on are all zeros, with
//     the failure in or after the first record that reaches into them: the
//     log was being written into unwritten space and those blocks never
//     arrived; the log ends at that record.
//
// Neither can be confused with an extension a compaction left behind: such
// an extension has a header (so the first shape does not apply) and is
// only reached through a link (so the second applies to it only if it is
// also zeros from some point on, which a log image never is).
func tornTailAt(f *logFailure) (LogPos, string, bool) {
	if f.link != nil {
		if errors.Is(f.err, errNoHeader) {
			return *f.link, "link to an extension that was never written", true
		}
		return LogPos{}, "", false
	}
	if f.buf == nil {
		return LogPos{}, "", false
	}
	z := zeroSuffix(f.buf)
	if z >= len(f.buf) {
		return LogPos{}, "", false
	}
	for i, st := range f.starts {
		if st >= z || f.ends[i] > z {
			return LogPos{Ext: f.ext.Start, Pos: st}, "record cut short by a torn write", true
		}
	}
	return LogPos{}, "", false
}

// salvagePoint is where fsck --repair ends a log that tornTailAt could not
// explain: before the failing record, or at the link to an unreadable
// extension. A log whose block 0 cannot be read has no such place.
func salvagePoint(f *logFailure) (LogPos, bool) {
	switch {
	case f.link != nil:
		return *f.link, true
	case len(f.starts) > 0:
		return LogPos{Ext: f.ext.Start, Pos: f.starts[len(f.starts)-1]}, true
	}
	return LogPos{}, false
}

// zeroSuffix is the smallest block-aligned offset from which buf is all
// zeros (len(buf) if its last block is not).
func zeroSuffix(buf []byte) int {
	z := len(buf)
	for z >= BlockSize {
		blk := buf[z-BlockSize : z]
		allZero := true
		for _, c := range blk {
			if c != 0 {
				allZero = false
				break
			}
		}
		if !allZero {
			break
		}
		z -= BlockSize
	}
	return z
}

// errNoHeader marks an extension without the TFS magic.
var errNoHeader = errors.New("no TFS extension header")

// Replay reads the chain from block 0, applying every record, until the
// END_OF_LOG, or until stop (which is then treated as the END_OF_LOG), or
// until something cannot be read (fail says what and where).
func Replay(dev blockdev.Device, volBlocks uint64, used *heap.Ranges, stop *LogPos) (*Log, *logFailure) {
	l := &Log{Dec: NewDecoder()}
	ext := Extension{Start: 0, NBlocks: 1}
	if err := used.Reserve(0, 1); err != nil {
		return nil, &logFailure{err: fmt.Errorf("log extension at block 0: %w", err)}
	}
	var pending []byte
	var pendingTotal uint64
	var pendingVersion int
	pendingAt := ""
	var link *LogPos // the link that led to ext, for a failure reading it
	for {
		buf := make([]byte, ext.NBlocks*BlockSize)
		if err := blockdev.ReadAt(dev, buf, int64(ext.Start)*BlockSize); err != nil {
			return nil, &logFailure{err: fmt.Errorf("read log extension at block %d: %w", ext.Start, err), ext: ext, link: link}
		}
		where := func(pos int) string { return fmt.Sprintf("log extension at block %d, byte %d", ext.Start, pos) }
		initial := ext.Start == 0 && len(l.Exts) == 0
		version, size, uuid, label, pos, err := extHeader(buf, initial)
		if err == nil && size != ext.NBlocks {
			err = fmt.Errorf("header says %d blocks, but the link gave %d", size, ext.NBlocks)
		}
		if err != nil {
			return nil, &logFailure{err: fmt.Errorf("%s: header: %w: %w", where(0), err, ErrCorrupt), ext: ext, link: link}
		}
		if initial {
			l.UUID, l.Label = uuid, label
		}
		ext.Version = version
		l.Exts = append(l.Exts, ext)
		f := &logFailure{ext: ext, buf: buf}
		// fail records the failing record, which starts at recPos and
		// reaches (by what could be read of it) to end, and returns the
		// failure.
		fail := func(recPos, end int, format string, args ...any) (*Log, *logFailure) {
			f.err = fmt.Errorf("%s: %s: %w", where(recPos), fmt.Sprintf(format, args...), ErrCorrupt)
			f.starts = append(f.starts, recPos)
			f.ends = append(f.ends, end)
			return nil, f
		}
		var next *Extension
	records:
		for {
			if pos >= len(buf) {
				return fail(pos, pos, "extension ends without END_OF_LOG or a link")
			}
			recPos := pos
			rec := buf[pos]
			if stop != nil && stop.Ext == ext.Start && stop.Pos == recPos {
				rec = RecEndOfLog
			}
			pos++
			switch rec {
			case RecEndOfSegment:
			case RecEndOfLog:
				if pending != nil {
					l.Dangling = true
				}
				l.LastBuf = buf
				l.EndPos = recPos
				return l, nil
			case RecLink:
				var s, n uint64
				if s, pos, err = getVarint(buf, pos); err == nil {
					n, pos, err = getVarint(buf, pos)
				}
				if err != nil {
					return fail(recPos, pos, "LOG_EXTENSION_LINK: %v", err)
				}
				if n == 0 {
					return fail(recPos, pos, "LOG_EXTENSION_LINK to block %d has zero length", s)
				}
				if n > maxLinkBlocks {
					return fail(recPos, pos, "LOG_EXTENSION_LINK to an extension of %d blocks; no TFS writer makes one larger than %d", n, maxLinkBlocks)
				}
				if n > volBlocks || s > volBlocks-n {
					return fail(recPos, pos, "LOG_EXTENSION_LINK to [%d,+%d) runs past the volume end (%d blocks)", s, n, volBlocks)
				}
				if err := used.Reserve(s, n); err != nil {
					return fail(recPos, pos, "LOG_EXTENSION_LINK to [%d,+%d) overlaps the log (a cycle?) or other used blocks", s, n)
				}
				next = &Extension{Start: s, NBlocks: n}
				link = &LogPos{Ext: ext.Start, Pos: recPos}
				break records
			case RecAvailable:
				var total, n uint64
				if total, pos, err = getVarint(buf, pos); err == nil {
					n, pos, err = getVarint(buf, pos)
				}
				if err != nil {
					return fail(recPos, pos, "TUPLE_AVAILABLE: %v", err)
				}
				if pending != nil {
					return fail(recPos, pos, "TUPLE_AVAILABLE while the value started at %s is incomplete", pendingAt)
				}
				if n > total {
					return fail(recPos, pos, "TUPLE_AVAILABLE chunk of %d bytes exceeds its total of %d", n, total)
				}
				if n >= uint64(len(buf)-pos) {
					return fail(recPos, pos, "TUPLE_AVAILABLE of %d bytes exceeds the %d bytes left", n, len(buf)-pos)
				}
				if total > volBlocks*BlockSize {
					return fail(recPos, pos, "TUPLE_AVAILABLE total of %d bytes is larger than the volume", total)
				}
				chunk := buf[pos : pos+int(n)]
				pos += int(n)
				if n == total {
					if err := l.decode(chunk, version); err != nil {
						return fail(recPos, pos, "record: %v", err)
					}
					f.starts, f.ends = append(f.starts, recPos), append(f.ends, pos)
					continue
				}
				pending = append(make([]byte, 0, min(total, 1<<20)), chunk...)
				pendingTotal, pendingVersion, pendingAt = total, version, where(recPos)
			case RecExtended:
				var n uint64
				if n, pos, err = getVarint(buf, pos); err != nil {
					return fail(recPos, pos, "TUPLE_EXTENDED: %v", err)
				}
				if pending == nil {
					return fail(recPos, pos, "TUPLE_EXTENDED without a value in progress")
				}
				if n >= uint64(len(buf)-pos) {
					return fail(recPos, pos, "TUPLE_EXTENDED of %d bytes exceeds the %d bytes left", n, len(buf)-pos)
				}
				if n > pendingTotal-uint64(len(pending)) {
					return fail(recPos, pos, "TUPLE_EXTENDED of %d bytes exceeds the %d bytes the value still needs", n, pendingTotal-uint64(len(pending)))
				}
				pending = append(pending, buf[pos:pos+int(n)]...)
				pos += int(n)
				if uint64(len(pending)) == pendingTotal {
					if err := l.decode(pending, pendingVersion); err != nil {
						return fail(recPos, pos, "record started at %s: %v", pendingAt, err)
					}
					pending = nil
				}
			default:
				return fail(recPos, pos, "unknown record type 0x%02x", rec)
			}
			if rec != RecAvailable || pending != nil {
				f.starts, f.ends = append(f.starts, recPos), append(f.ends, pos)
			}
		}
		ext = *next
	}
}

func (l *Log) decode(b []byte, version int) error {
	if l.Records == 0 {
		// Index 1 must be the root: the first item an immediate tuple.
		h, _, err := getHeader(b, 0, version)
		if err != nil {
			return err
		}
		if !h.imm || h.typ != typeTuple {
			return fmt.Errorf("first record does not start with an immediate tuple (the root)")
		}
		l.FirstSum = crc32.Checksum(b, Castagnoli)
	}
	if _, err := l.Dec.DecodeEntry(b, version); err != nil {
		return err
	}
	l.Records++
	return nil
}
