package tfs

import (
	"fmt"
	"hash/crc32"
	"unicode/utf8"

	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/heap"
)

// The metadata log (tfs-format.md §2): a chain of extensions holding
// records that carry encoded values. This file reads it.

const (
	blockSize = 512

	recEndOfLog     = 0x01
	recAvailable    = 0x02
	recExtended     = 0x03
	recEndOfSegment = 0x04
	recLink         = 0x05

	extBlocks = 1024 // every extension after block 0 (§2.1)
	maxLabel  = 31
)

// extension is one contiguous run of log blocks.
type extension struct {
	start, nblocks uint64
	version        int
}

// logState is what replay learns about the log beyond the object graph:
// enough to append to it byte-compatibly (§3.10).
type logState struct {
	uuid    [16]byte
	label   string
	exts    []extension // the chain in order; exts[0] is block 0
	lastBuf []byte      // contents of the last extension
	endPos  int         // offset of END_OF_LOG in lastBuf
	// dangling: the log ended inside a value (§6.4); appends would make the
	// next mount fail, so the writer rebuilds the log first.
	dangling bool
	dec      *decoder
	records  uint64 // complete values decoded
	// firstSum is the CRC-32C of the first value (the root record): it
	// names this log generation (ino.go). A compaction sets it for the
	// log it writes.
	firstSum uint32
}

func (l *logState) last() extension { return l.exts[len(l.exts)-1] }

// extHeader parses an extension header at b[0:]; for the initial extension
// it also returns the UUID and label. It returns the offset after it.
func extHeader(b []byte, initial bool) (version int, size uint64, uuid [16]byte, label string, pos int, err error) {
	if len(b) < len(magic) || string(b[:len(magic)]) != magic {
		n := min(len(b), len(magic))
		return 0, 0, uuid, "", 0, fmt.Errorf("bad magic % x, want %q", b[:n], magic)
	}
	pos = len(magic)
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
	for i := pos; i < len(b) && i <= pos+maxLabel; i++ {
		if b[i] == 0 {
			end = i
			break
		}
	}
	if end < 0 {
		return 0, 0, uuid, "", pos, fmt.Errorf("label at byte %d has no NUL within %d bytes", pos, maxLabel+1)
	}
	label = string(b[pos:end])
	if !utf8.ValidString(label) {
		return 0, 0, uuid, "", pos, fmt.Errorf("label at byte %d is not valid UTF-8", pos)
	}
	return int(v), size, uuid, label, end + 1, nil
}

// readLog replays the log of a volume of volBlocks blocks. Every extension
// it follows is reserved in used, which therefore rejects links that overlap
// the chain itself (cycles) or block 0. Memory is bounded by the chain, and
// the chain by the volume, since extensions are disjoint.
func readLog(dev blockdev.Device, volBlocks uint64, used *heap.Ranges) (*logState, error) {
	l := &logState{dec: newDecoder()}
	ext := extension{start: 0, nblocks: 1}
	if err := used.Reserve(0, 1); err != nil {
		return nil, fmt.Errorf("log extension at block 0: %w", err)
	}
	var pending []byte
	var pendingTotal uint64
	var pendingVersion int
	pendingAt := ""
	for {
		buf := make([]byte, ext.nblocks*blockSize)
		if err := blockdev.ReadAt(dev, buf, int64(ext.start)*blockSize); err != nil {
			return nil, fmt.Errorf("read log extension at block %d: %w", ext.start, err)
		}
		where := func(pos int) string { return fmt.Sprintf("log extension at block %d, byte %d", ext.start, pos) }
		initial := ext.start == 0 && len(l.exts) == 0
		version, size, uuid, label, pos, err := extHeader(buf, initial)
		if err != nil {
			return nil, fmt.Errorf("%s: header: %w", where(0), err)
		}
		if size != ext.nblocks {
			return nil, fmt.Errorf("%s: header says %d blocks, but the link gave %d", where(0), size, ext.nblocks)
		}
		if initial {
			l.uuid, l.label = uuid, label
		}
		ext.version = version
		l.exts = append(l.exts, ext)
		var next *extension
	records:
		for {
			if pos >= len(buf) {
				return nil, fmt.Errorf("%s: extension ends without END_OF_LOG or a link", where(pos))
			}
			recPos := pos
			rec := buf[pos]
			pos++
			switch rec {
			case recEndOfSegment:
			case recEndOfLog:
				if pending != nil {
					l.dangling = true
				}
				l.lastBuf = buf
				l.endPos = recPos
				return l, nil
			case recLink:
				var s, n uint64
				if s, pos, err = getVarint(buf, pos); err == nil {
					n, pos, err = getVarint(buf, pos)
				}
				if err != nil {
					return nil, fmt.Errorf("%s: LOG_EXTENSION_LINK: %w", where(recPos), err)
				}
				if n == 0 {
					return nil, fmt.Errorf("%s: LOG_EXTENSION_LINK to block %d has zero length", where(recPos), s)
				}
				if n > volBlocks || s > volBlocks-n {
					return nil, fmt.Errorf("%s: LOG_EXTENSION_LINK to [%d,+%d) runs past the volume end (%d blocks)", where(recPos), s, n, volBlocks)
				}
				if err := used.Reserve(s, n); err != nil {
					return nil, fmt.Errorf("%s: LOG_EXTENSION_LINK to [%d,+%d) overlaps the log (a cycle?) or other used blocks", where(recPos), s, n)
				}
				next = &extension{start: s, nblocks: n}
				break records
			case recAvailable:
				var total, n uint64
				if total, pos, err = getVarint(buf, pos); err == nil {
					n, pos, err = getVarint(buf, pos)
				}
				if err != nil {
					return nil, fmt.Errorf("%s: TUPLE_AVAILABLE: %w", where(recPos), err)
				}
				if pending != nil {
					return nil, fmt.Errorf("%s: TUPLE_AVAILABLE while the value started at %s is incomplete", where(recPos), pendingAt)
				}
				if n > total {
					return nil, fmt.Errorf("%s: TUPLE_AVAILABLE chunk of %d bytes exceeds its total of %d", where(recPos), n, total)
				}
				if n >= uint64(len(buf)-pos) {
					return nil, fmt.Errorf("%s: TUPLE_AVAILABLE of %d bytes exceeds the %d bytes left", where(recPos), n, len(buf)-pos)
				}
				if total > volBlocks*blockSize {
					return nil, fmt.Errorf("%s: TUPLE_AVAILABLE total of %d bytes is larger than the volume", where(recPos), total)
				}
				chunk := buf[pos : pos+int(n)]
				pos += int(n)
				if n == total {
					if err := l.decode(chunk, version); err != nil {
						return nil, fmt.Errorf("%s: record: %w", where(recPos), err)
					}
					continue
				}
				pending = append(make([]byte, 0, min(total, 1<<20)), chunk...)
				pendingTotal, pendingVersion, pendingAt = total, version, where(recPos)
			case recExtended:
				var n uint64
				if n, pos, err = getVarint(buf, pos); err != nil {
					return nil, fmt.Errorf("%s: TUPLE_EXTENDED: %w", where(recPos), err)
				}
				if pending == nil {
					return nil, fmt.Errorf("%s: TUPLE_EXTENDED without a value in progress", where(recPos))
				}
				if n >= uint64(len(buf)-pos) {
					return nil, fmt.Errorf("%s: TUPLE_EXTENDED of %d bytes exceeds the %d bytes left", where(recPos), n, len(buf)-pos)
				}
				if n > pendingTotal-uint64(len(pending)) {
					return nil, fmt.Errorf("%s: TUPLE_EXTENDED of %d bytes exceeds the %d bytes the value still needs", where(recPos), n, pendingTotal-uint64(len(pending)))
				}
				pending = append(pending, buf[pos:pos+int(n)]...)
				pos += int(n)
				if uint64(len(pending)) == pendingTotal {
					if err := l.decode(pending, pendingVersion); err != nil {
						return nil, fmt.Errorf("%s: record started at %s: %w", where(recPos), pendingAt, err)
					}
					pending = nil
				}
			default:
				return nil, fmt.Errorf("%s: unknown record type 0x%02x", where(recPos), rec)
			}
		}
		ext = *next
	}
}

func (l *logState) decode(b []byte, version int) error {
	if l.records == 0 {
		// Index 1 must be the root: the first item an immediate tuple.
		h, _, err := getHeader(b, 0, version)
		if err != nil {
			return err
		}
		if !h.imm || h.typ != typeTuple {
			return fmt.Errorf("first record does not start with an immediate tuple (the root)")
		}
		l.firstSum = crc32.Checksum(b, castagnoli)
	}
	if _, err := l.dec.decodeEntry(b, version); err != nil {
		return err
	}
	l.records++
	return nil
}
