package tfs

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
)

// Values of the TFS tuple encoding (tfs-format.md §3). A decoded value is
// one of: *tuple, *vector, bytesVal (buffer or string), intVal, or nil for
// "absent" (the empty buffer, which removes an attribute).

// tuple is a TFS tuple: an unordered map from symbol names to values. Its
// identity matters: every reference to one dictionary index yields the same
// *tuple, which is how hard links and later EAV records find their target.
type tuple struct {
	attrs map[string]value
	node  *Node // the filesystem node this tuple is, once seen by the model
}

func newTuple() *tuple { return &tuple{attrs: map[string]value{}} }

// vector is an ordered list (used in the root's configuration only).
type vector struct {
	elems []value
}

// bytesVal is an untyped buffer (str false) or a string (str true).
type bytesVal struct {
	s   string
	str bool
}

// intVal is an integer: its magnitude and sign.
type intVal struct {
	mag uint64
	neg bool
}

type value any

// missingRef is a reference to a tuple index the log never defined, read
// where a value (a directory entry, say) was expected. Replay keeps going;
// the model reports and skips it, and it is never written back.
type missingRef struct{ idx uint64 }

// nullMarker is the one-byte buffer 00 that marks a flag attribute
// (uninited, socket, no_encode) as present.
var nullMarker = bytesVal{s: "\x00"}

// Header types (v5 numbering; v4's one type bit maps onto 0 and 1).
const (
	typeBuffer  = 0
	typeTuple   = 1
	typeVector  = 2
	typeInteger = 3
	typeString  = 4
)

var errShort = errors.New("runs past the end of the data")

// putVarint appends v as a big-endian base-128 varint (§2.2).
func putVarint(b []byte, v uint64) []byte {
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

// putHeader appends an item header (§3.1) for the given version.
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

// numberOf interprets v as a non-negative integer: the integer type, or
// decimal text in a string or buffer (ops and v4 write numbers as text).
func numberOf(v value) (uint64, bool) {
	switch x := v.(type) {
	case intVal:
		return x.mag, !x.neg || x.mag == 0
	case bytesVal:
		if x.s == "" || len(x.s) > 20 {
			return 0, false
		}
		n, err := strconv.ParseUint(x.s, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// textOf returns the text of a string or buffer value.
func textOf(v value) (string, bool) {
	x, ok := v.(bytesVal)
	return x.s, ok
}

func intOf(n uint64) intVal { return intVal{mag: n} }

func strOf(s string) bytesVal { return bytesVal{s: s, str: true} }
