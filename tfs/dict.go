package tfs

import (
	"fmt"
	"sort"
)

// maxDepth bounds the nesting of decoded values. Each directory level costs
// two levels (the directory tuple and its children tuple), so this allows
// paths far deeper than Linux's 4096-byte PATH_MAX can name.
const maxDepth = 8192

// decoder holds the reading side of a log's dictionary (§3.3): index →
// object, where an object is a *tuple, a *vector or a symbol (string).
// It spans the whole log and is carried across records and extensions.
type decoder struct {
	dict []any // dict[i] is index i; dict[0] unused

	// Counters for the compaction policy (§2.9).
	entries, obsolete uint64
	// dupNames is set when a symbol was written immediately twice (§3.3):
	// appending to such a log would collide indices, so mount rebuilds it.
	dupNames bool
	symSeen  map[string]bool
	// missing lists where a value referred to an undefined index.
	missing []missingAt
}

// missingAt is an attribute whose value was a missingRef when read.
type missingAt struct {
	t    *tuple
	name string
	ref  missingRef
}

func newDecoder() *decoder {
	return &decoder{dict: make([]any, 1), symSeen: map[string]bool{}}
}

// next is the index the next immediate tuple, vector or name receives.
func (d *decoder) next() uint64 { return uint64(len(d.dict)) }

type decodeState struct {
	d       *decoder
	b       []byte
	version int
}

// decodeEntry decodes one complete log entry (§3.8) and applies it to the
// object graph. It must consume exactly len(b) bytes.
func (d *decoder) decodeEntry(b []byte, version int) (value, error) {
	s := decodeState{d: d, b: b, version: version}
	v, pos, err := s.value(0, 0)
	if err != nil {
		return nil, err
	}
	if pos != len(b) {
		return nil, fmt.Errorf("value ends at byte %d of a %d-byte record", pos, len(b))
	}
	if _, ok := v.(*tuple); !ok {
		return nil, fmt.Errorf("record is a %T, not a tuple", v)
	}
	return v, nil
}

func (s *decodeState) lookup(idx uint64, pos int) (any, error) {
	if idx == 0 || idx >= uint64(len(s.d.dict)) {
		return nil, fmt.Errorf("reference at byte %d to undefined index %d (dictionary has %d)", pos, idx, len(s.d.dict)-1)
	}
	return s.d.dict[idx], nil
}

func (s *decodeState) bytes(pos int, l uint64) (string, int, error) {
	if l > uint64(len(s.b)-pos) {
		return "", pos, fmt.Errorf("%d-byte item at byte %d exceeds the %d bytes left", l, pos, len(s.b)-pos)
	}
	return string(s.b[pos : pos+int(l)]), pos + int(l), nil
}

// name decodes an attribute name (a symbol).
func (s *decodeState) name(pos int) (string, int, error) {
	start := pos
	h, pos, err := getHeader(s.b, pos, s.version)
	if err != nil {
		return "", pos, err
	}
	if !h.imm {
		o, err := s.lookup(h.l, start)
		if err != nil {
			return "", pos, err
		}
		sym, ok := o.(string)
		if !ok {
			return "", pos, fmt.Errorf("name at byte %d refers to index %d, a %s, not a symbol", start, h.l, kindName(o))
		}
		return sym, pos, nil
	}
	sym, pos, err := s.bytes(pos, h.l)
	if err != nil {
		return "", pos, fmt.Errorf("name at byte %d: %w", start, err)
	}
	if s.d.symSeen[sym] {
		s.d.dupNames = true
	}
	s.d.symSeen[sym] = true
	s.d.dict = append(s.d.dict, sym)
	return sym, pos, nil
}

func kindName(o any) string {
	switch o.(type) {
	case *tuple:
		return "tuple"
	case *vector:
		return "vector"
	case string:
		return "symbol"
	}
	return fmt.Sprintf("%T", o)
}

// value decodes one value at pos. top is true for the record's top level.
func (s *decodeState) value(pos, depth int) (value, int, error) {
	if depth > maxDepth {
		return nil, pos, fmt.Errorf("value at byte %d nested deeper than %d", pos, maxDepth)
	}
	start := pos
	h, pos, err := getHeader(s.b, pos, s.version)
	if err != nil {
		return nil, pos, err
	}
	switch h.typ {
	case typeBuffer, typeString:
		if !h.imm {
			o, err := s.lookup(h.l, start)
			if err != nil {
				return nil, pos, err
			}
			sym, ok := o.(string)
			if !ok {
				return nil, pos, fmt.Errorf("buffer reference at byte %d to index %d, a %s", start, h.l, kindName(o))
			}
			return bytesVal{s: sym, str: h.typ == typeString}, pos, nil
		}
		str, pos, err := s.bytes(pos, h.l)
		if err != nil {
			return nil, pos, fmt.Errorf("buffer at byte %d: %w", start, err)
		}
		if h.typ == typeBuffer && h.l == 0 {
			return nil, pos, nil // absent
		}
		return bytesVal{s: str, str: h.typ == typeString}, pos, nil
	case typeInteger:
		if !h.imm {
			return nil, pos, fmt.Errorf("integer at byte %d has the reference flag", start)
		}
		m, pos, err := getVarint(s.b, pos)
		if err != nil {
			return nil, pos, fmt.Errorf("integer at byte %d: %w", start, err)
		}
		return intVal{mag: m, neg: h.l != 0}, pos, nil
	case typeTuple:
		var t *tuple
		if h.imm {
			t = newTuple()
			s.d.dict = append(s.d.dict, t)
		} else {
			idx, p, err := getVarint(s.b, pos)
			if err != nil {
				return nil, p, fmt.Errorf("tuple reference at byte %d: %w", start, err)
			}
			pos = p
			if h.l == 0 && (idx == 0 || idx >= uint64(len(s.d.dict))) {
				// A plain reference to a node the log never defined:
				// the attribute holding it is skipped, not the log.
				return missingRef{idx}, pos, nil
			}
			o, err := s.lookup(idx, start)
			if err != nil {
				return nil, pos, err
			}
			var ok bool
			if t, ok = o.(*tuple); !ok {
				return nil, pos, fmt.Errorf("tuple reference at byte %d to index %d, a %s", start, idx, kindName(o))
			}
		}
		// Each entry takes at least two bytes: check before looping.
		if h.l > uint64(len(s.b)-pos)/2 {
			return nil, pos, fmt.Errorf("tuple at byte %d claims %d entries, only %d bytes left", start, h.l, len(s.b)-pos)
		}
		for i := uint64(0); i < h.l; i++ {
			var name string
			var v value
			name, pos, err = s.name(pos)
			if err != nil {
				return nil, pos, err
			}
			v, pos, err = s.value(pos, depth+1)
			if err != nil {
				return nil, pos, err
			}
			s.apply(t, name, v)
		}
		return t, pos, nil
	case typeVector:
		var vec *vector
		if h.imm {
			vec = &vector{}
			s.d.dict = append(s.d.dict, vec)
		} else {
			idx, p, err := getVarint(s.b, pos)
			if err != nil {
				return nil, p, fmt.Errorf("vector reference at byte %d: %w", start, err)
			}
			pos = p
			o, err := s.lookup(idx, start)
			if err != nil {
				return nil, pos, err
			}
			var ok bool
			if vec, ok = o.(*vector); !ok {
				return nil, pos, fmt.Errorf("vector reference at byte %d to index %d, a %s", start, idx, kindName(o))
			}
		}
		if h.l > uint64(len(s.b)-pos) {
			return nil, pos, fmt.Errorf("vector at byte %d claims %d elements, only %d bytes left", start, h.l, len(s.b)-pos)
		}
		for i := 0; i < int(h.l); i++ {
			var v value
			v, pos, err = s.value(pos, depth+1)
			if err != nil {
				return nil, pos, err
			}
			if i < len(vec.elems) {
				vec.elems[i] = v
			} else {
				vec.elems = append(vec.elems, v)
			}
		}
		return vec, pos, nil
	}
	return nil, pos, fmt.Errorf("value at byte %d has unknown type %d", start, h.typ)
}

// apply sets or removes one attribute and counts it for the compaction
// policy: an overwrite makes one entry obsolete, a removal two.
func (s *decodeState) apply(t *tuple, name string, v value) {
	if name == "." || name == ".." {
		return
	}
	s.d.entries++
	_, had := t.attrs[name]
	if v == nil {
		if had {
			delete(t.attrs, name)
		}
		s.d.obsolete += 2
		return
	}
	if had {
		s.d.obsolete++
	}
	t.attrs[name] = v
	if m, ok := v.(missingRef); ok && len(s.d.missing) < maxProblems {
		s.d.missing = append(s.d.missing, missingAt{t, name, m})
	}
}

// encoder is the writing side of a log's dictionary: object identity →
// index (tuples and vectors by pointer, symbols by content).
type encoder struct {
	version int
	next    uint64
	syms    map[string]uint64
	objs    map[any]uint64
}

func newEncoder() *encoder {
	return &encoder{version: 5, next: 1, syms: map[string]uint64{}, objs: map[any]uint64{}}
}

// encoderFrom inverts a decoded dictionary so appends continue it.
func encoderFrom(d *decoder) *encoder {
	e := newEncoder()
	e.next = d.next()
	for i := 1; i < len(d.dict); i++ {
		switch o := d.dict[i].(type) {
		case string:
			if _, ok := e.syms[o]; !ok {
				e.syms[o] = uint64(i)
			}
		default:
			e.objs[o] = uint64(i)
		}
	}
	return e
}

func (e *encoder) has(o any) bool { _, ok := e.objs[o]; return ok }

func (e *encoder) name(b []byte, n string) []byte {
	if idx, ok := e.syms[n]; ok {
		return putHeader(b, e.version, false, typeBuffer, idx)
	}
	e.syms[n] = e.next
	e.next++
	b = putHeader(b, e.version, true, typeBuffer, uint64(len(n)))
	return append(b, n...)
}

// persistent lists the attributes of t that are written, sorted by name
// so encodings are deterministic.
func persistent(t *tuple) []string {
	names := make([]string, 0, len(t.attrs))
	for n, v := range t.attrs {
		if n == "." || n == ".." {
			continue
		}
		if vt, ok := v.(*tuple); ok {
			if _, skip := vt.attrs["no_encode"]; skip {
				continue
			}
		}
		if _, missing := v.(missingRef); missing {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// value appends v following §3.9. shallow asks that a tuple already in the
// dictionary be written as a zero-entry reference (rename and link emit
// only the children EAVs, notes §10). visited holds the tuples written in
// this entry: a second path to one is written as a zero-entry reference.
func (e *encoder) value(b []byte, v value, visited map[any]bool, shallow bool) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, 0x80)
	case bytesVal:
		typ := typeBuffer
		if x.str && e.version == 5 {
			typ = typeString
		}
		b = putHeader(b, e.version, true, typ, uint64(len(x.s)))
		return append(b, x.s...)
	case intVal:
		if e.version == 4 {
			s := fmt.Sprint(x.mag)
			b = putHeader(b, 4, true, typeBuffer, uint64(len(s)))
			return append(b, s...)
		}
		sign := uint64(0)
		if x.neg {
			sign = 1
		}
		b = putHeader(b, 5, true, typeInteger, sign)
		return putVarint(b, x.mag)
	case *vector:
		if idx, ok := e.objs[x]; ok {
			if visited[x] || shallow {
				b = putHeader(b, e.version, false, typeVector, 0)
				return putVarint(b, idx)
			}
			visited[x] = true
			b = putHeader(b, e.version, false, typeVector, uint64(len(x.elems)))
			b = putVarint(b, idx)
		} else {
			e.objs[x] = e.next
			e.next++
			visited[x] = true
			b = putHeader(b, e.version, true, typeVector, uint64(len(x.elems)))
		}
		for _, el := range x.elems {
			if t, ok := el.(*tuple); ok {
				if _, skip := t.attrs["no_encode"]; skip {
					el = nil
				}
			}
			b = e.value(b, el, visited, false)
		}
		return b
	case *tuple:
		if idx, ok := e.objs[x]; ok {
			if visited[x] || shallow {
				b = putHeader(b, e.version, false, typeTuple, 0)
				return putVarint(b, idx)
			}
			visited[x] = true
			names := persistent(x)
			b = putHeader(b, e.version, false, typeTuple, uint64(len(names)))
			b = putVarint(b, idx)
			return e.attrs(b, x, names, visited)
		}
		e.objs[x] = e.next
		e.next++
		visited[x] = true
		names := persistent(x)
		b = putHeader(b, e.version, true, typeTuple, uint64(len(names)))
		return e.attrs(b, x, names, visited)
	}
	panic(fmt.Sprintf("tfs: encode of unexpected %T", v))
}

func (e *encoder) attrs(b []byte, t *tuple, names []string, visited map[any]bool) []byte {
	for _, n := range names {
		b = e.name(b, n)
		b = e.value(b, t.attrs[n], visited, false)
	}
	return b
}

// eav encodes one EAV entry (§3.8): target (already in the dictionary)
// gets attribute name set to v (nil removes it).
func (e *encoder) eav(b []byte, target *tuple, name string, v value, shallow bool) []byte {
	idx, ok := e.objs[target]
	if !ok {
		panic("tfs: EAV on a tuple that is not in the log")
	}
	b = putHeader(b, e.version, false, typeTuple, 1)
	b = putVarint(b, idx)
	b = e.name(b, name)
	return e.value(b, v, map[any]bool{target: true}, shallow)
}
