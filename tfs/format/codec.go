package format

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"time"
)

// Values of the TFS tuple encoding (docs/format.md,
// "Item headers (v4 and v5)" and "Values"). A decoded value is one of:
// *tuple, *vector, bytesVal (buffer or string), intVal, or nil for "absent"
// (the empty buffer, which removes an attribute).

// Tuple is a TFS Tuple: an unordered map from symbol names to values. Its
// identity matters: every reference to one dictionary index yields the same
// *Tuple, which is how hard links and later EAV records find their target.
type Tuple struct {
	Attrs map[string]Value
	// Owner is whatever the layer above attaches to this tuple (tfs: its
	// *Node). The format never reads it.
	Owner any
}

func NewTuple() *Tuple { return &Tuple{Attrs: map[string]Value{}} }

// Vector is an ordered list (used in the root's configuration only).
type Vector struct {
	Elems []Value
}

// Bytes is an untyped buffer (str false) or a string (str true).
type Bytes struct {
	Data     string
	IsString bool
}

// Int is an integer: its magnitude and sign.
type Int struct {
	Mag uint64
	Neg bool
}

type Value any

// MissingRef is a reference to a tuple index the log never defined, read
// where a value (a directory entry, say) was expected. Replay keeps going;
// the model reports and skips it, and it is never written back.
type MissingRef struct{ Idx uint64 }

// NullMarker is the one-byte buffer 00 that marks a flag attribute
// (uninited, socket, no_encode) as present.
var NullMarker = Bytes{Data: "\x00"}

// Header types (v5 numbering; v4's one type bit maps onto 0 and 1).
const (
	typeBuffer  = 0
	typeTuple   = 1
	typeVector  = 2
	typeInteger = 3
	typeString  = 4
)

var errShort = errors.New("runs past the end of the data")

// PutVarint appends v as a big-endian base-128 varint (docs/format.md,
// "Varints").
func PutVarint(b []byte, v uint64) []byte {
	n := 1
	for x := v >> 7; x != 0; x >>= 7 {
		n++
	}
	for i := n - 1; i >= 0; i-- {
		c := byte(v>>(7*uint(i))) & 0x7f
		if i != 0 {
			c |= 0x80
		}
		b = append(b, c)
	}
	return b
}

// getVarint decodes a varint at b[pos:], refusing more than 10 bytes and
// values that overflow 64 bits.
func getVarint(b []byte, pos int) (uint64, int, error) {
	var v uint64
	for i := 0; ; i++ {
		if pos+i >= len(b) {
			return 0, pos, fmt.Errorf("varint at %d: %w", pos, errShort)
		}
		if i >= 10 || v>>57 != 0 {
			return 0, pos, fmt.Errorf("varint at %d overflows 64 bits", pos)
		}
		c := b[pos+i]
		v = v<<7 | uint64(c&0x7f)
		if c&0x80 == 0 {
			return v, pos + i + 1, nil
		}
	}
}

// putHeader appends an item header (docs/format.md,
// "Item headers (v4 and v5)") for the given version.
func putHeader(b []byte, version int, imm bool, typ int, l uint64) []byte {
	inline := 3
	var first byte
	if imm {
		first = 0x80
	}
	if version == 4 {
		inline = 5
		first |= byte(typ&1) << 6
	} else {
		first |= byte(typ&7) << 4
	}
	nb := bits.Len64(l)
	if nb <= inline {
		return append(b, first|byte(l))
	}
	words := (nb - inline + 6) / 7
	cont := byte(0x08)
	if version == 4 {
		cont = 0x20
	}
	b = append(b, first|cont|byte(l>>(7*uint(words))))
	for i := words - 1; i >= 0; i-- {
		c := byte(l>>(7*uint(i))) & 0x7f
		if i != 0 {
			c |= 0x80
		}
		b = append(b, c)
	}
	return b
}

// header is a decoded item header.
type header struct {
	imm bool
	typ int
	l   uint64
}

func getHeader(b []byte, pos, version int) (header, int, error) {
	if pos >= len(b) {
		return header{}, pos, fmt.Errorf("header at %d: %w", pos, errShort)
	}
	c := b[pos]
	h := header{imm: c&0x80 != 0}
	var more bool
	if version == 4 {
		h.typ = int(c>>6) & 1
		more = c&0x20 != 0
		h.l = uint64(c & 0x1f)
	} else {
		h.typ = int(c>>4) & 7
		more = c&0x08 != 0
		h.l = uint64(c & 7)
	}
	pos++
	for i := 0; more; i++ {
		if pos >= len(b) {
			return h, pos, fmt.Errorf("header length at %d: %w", pos, errShort)
		}
		if i >= 10 || h.l>>57 != 0 {
			return h, pos, fmt.Errorf("header length at %d overflows 64 bits", pos)
		}
		c = b[pos]
		h.l = h.l<<7 | uint64(c&0x7f)
		more = c&0x80 != 0
		pos++
	}
	return h, pos, nil
}

// NumberOf interprets v as a non-negative integer: the integer type, or
// decimal text in a string or buffer (ops and v4 write numbers as text).
func NumberOf(v Value) (uint64, bool) {
	switch x := v.(type) {
	case Int:
		return x.Mag, !x.Neg || x.Mag == 0
	case Bytes:
		if x.Data == "" || len(x.Data) > 20 {
			return 0, false
		}
		n, err := strconv.ParseUint(x.Data, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// TextOf returns the text of a string or buffer value.
func TextOf(v Value) (string, bool) {
	x, ok := v.(Bytes)
	return x.Data, ok
}

func IntOf(n uint64) Int { return Int{Mag: n} }

func StrOf(s string) Bytes { return Bytes{Data: s, IsString: true} }

// Times are 32.32 fixed-point seconds since the Unix epoch: from 1970 to
// the start of 2106 (MinTime to MaxTime). Time decodes one; Timestamp
// encodes one, rounding a fraction up so that a time read back is never
// earlier than the one written.
func Time(t uint64) time.Time {
	sec := int64(t >> 32)
	nsec := int64(((t & 0xFFFFFFFF) * 1000000000) >> 32)
	return time.Unix(sec, nsec)
}

// The range of times a volume can hold.
var (
	MinTime = time.Unix(0, 0)
	MaxTime = Time(math.MaxUint64)
)

// Timestamp is the encoding of tm (see Time). A time outside the format's
// range is clamped to its nearest end, as the kernel clamps a time to what
// a filesystem can store, instead of wrapping around to another date.
func Timestamp(tm time.Time) uint64 {
	switch {
	case tm.Before(MinTime):
		return 0
	case !tm.Before(MaxTime):
		return math.MaxUint64
	}
	sec := uint64(tm.Unix())
	nsec := uint64(tm.Nanosecond())
	t := sec << 32
	if nsec != 0 {
		t += (nsec<<32)/1000000000 + 1
	}
	return t
}
