package format

import (
	"fmt"
	"sort"
)

// MaxDepth bounds the nesting of decoded values. Each directory level costs
// two levels (the directory tuple and its children tuple), so this allows
// paths far deeper than Linux's 4096-byte PATH_MAX can name.
const MaxDepth = 8192

// Decoder holds the reading side of a log's dictionary (docs/format.md,
// "The dictionary"): index → object, where an object is a *tuple, a *vector
// or a symbol (string). It spans the whole log and is carried across records
// and extensions.
type Decoder struct {
	dict []any // dict[i] is index i; dict[0] unused

	// Counters for the compaction policy (docs/format.md, "Compaction").
	Entries, Obsolete uint64
	// DupNames is set when a symbol was written immediately twice:
	// appending to such a log would collide indices, so mount rebuilds it.
	DupNames bool
	symSeen  map[string]bool
	// Missing lists where a value referred to an undefined index.
	Missing []MissingAt
}

// MissingAt is an attribute whose value was a missingRef when read.
type MissingAt struct {
	Tuple *Tuple
	Name  string
	Ref   MissingRef
}

func NewDecoder() *Decoder {
	return &Decoder{dict: make([]any, 1), symSeen: map[string]bool{}}
}

// Next is the index the Next immediate tuple, vector or name receives.
func (d *Decoder) Next() uint64 { return uint64(len(d.dict)) }

// Object is the object at index i: a *Tuple, a *Vector, a symbol (string),
// or nil if i is not an index of the dictionary.
func (d *Decoder) Object(i uint64) any {
	if i == 0 || i >= uint64(len(d.dict)) {
		return nil
	}
	return d.dict[i]
}

type decodeState struct {
	d       *Decoder
	b       []byte
	version int
}

// DecodeEntry decodes one complete log entry (docs/format.md,
// "Log entries and EAV records") and applies it to the object graph. It must
// consume exactly len(b) bytes.
func (d *Decoder) DecodeEntry(b []byte, version int) (Value, error) {
	s := decodeState{d: d, b: b, version: version}
	v, pos, err := s.value(0, 0)
	if err != nil {
		return nil, err
	}
	if pos != len(b) {
		return nil, fmt.Errorf("value ends at byte %d of a %d-byte record", pos, len(b))
	}
	if _, ok := v.(*Tuple); !ok {
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
			return "", pos, fmt.Errorf("name at byte %d refers to index %d, a %s, not a symbol", start, h.l, KindName(o))
		}
		return sym, pos, nil
	}
	sym, pos, err := s.bytes(pos, h.l)
	if err != nil {
		return "", pos, fmt.Errorf("name at byte %d: %w", start, err)
	}
	if s.d.symSeen[sym] {
		s.d.DupNames = true
	}
	s.d.symSeen[sym] = true
	s.d.dict = append(s.d.dict, sym)
	return sym, pos, nil
}

func KindName(o any) string {
	switch o.(type) {
	case *Tuple:
		return "tuple"
	case *Vector:
		return "vector"
	case string:
		return "symbol"
	}
	return fmt.Sprintf("%T", o)
}

// value decodes one value at pos, depth levels below the entry's top value
// (depth 0); deeper than MaxDepth is an error.
func (s *decodeState) value(pos, depth int) (Value, int, error) {
	if depth > MaxDepth {
		return nil, pos, fmt.Errorf("value at byte %d nested deeper than %d", pos, MaxDepth)
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
				return nil, pos, fmt.Errorf("buffer reference at byte %d to index %d, a %s", start, h.l, KindName(o))
			}
			return Bytes{Data: sym, IsString: h.typ == typeString}, pos, nil
		}
		str, pos, err := s.bytes(pos, h.l)
		if err != nil {
			return nil, pos, fmt.Errorf("buffer at byte %d: %w", start, err)
		}
		if h.typ == typeBuffer && h.l == 0 {
			return nil, pos, nil // absent
		}
		return Bytes{Data: str, IsString: h.typ == typeString}, pos, nil
	case typeInteger:
		if !h.imm {
			return nil, pos, fmt.Errorf("integer at byte %d has the reference flag", start)
		}
		m, pos, err := getVarint(s.b, pos)
		if err != nil {
			return nil, pos, fmt.Errorf("integer at byte %d: %w", start, err)
		}
		return Int{Mag: m, Neg: h.l != 0}, pos, nil
	case typeTuple:
		var t *Tuple
		if h.imm {
			t = NewTuple()
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
				return MissingRef{idx}, pos, nil
			}
			o, err := s.lookup(idx, start)
			if err != nil {
				return nil, pos, err
			}
			var ok bool
			if t, ok = o.(*Tuple); !ok {
				return nil, pos, fmt.Errorf("tuple reference at byte %d to index %d, a %s", start, idx, KindName(o))
			}
		}
		// Each entry takes at least two bytes: check before looping.
		if h.l > uint64(len(s.b)-pos)/2 {
			return nil, pos, fmt.Errorf("tuple at byte %d claims %d entries, only %d bytes left", start, h.l, len(s.b)-pos)
		}
		for i := uint64(0); i < h.l; i++ {
			var name string
			var v Value
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
		var vec *Vector
		if h.imm {
			vec = &Vector{}
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
			if vec, ok = o.(*Vector); !ok {
				return nil, pos, fmt.Errorf("vector reference at byte %d to index %d, a %s", start, idx, KindName(o))
			}
		}
		if h.l > uint64(len(s.b)-pos) {
			return nil, pos, fmt.Errorf("vector at byte %d claims %d elements, only %d bytes left", start, h.l, len(s.b)-pos)
		}
		for i := 0; i < int(h.l); i++ {
			var v Value
			v, pos, err = s.value(pos, depth+1)
			if err != nil {
				return nil, pos, err
			}
			if i < len(vec.Elems) {
				vec.Elems[i] = v
			} else {
				vec.Elems = append(vec.Elems, v)
			}
		}
		return vec, pos, nil
	}
	return nil, pos, fmt.Errorf("value at byte %d has unknown type %d", start, h.typ)
}

// apply sets or removes one attribute and counts it for the compaction
// policy: an overwrite makes one entry obsolete, a removal two.
func (s *decodeState) apply(t *Tuple, name string, v Value) {
	if name == "." || name == ".." {
		return
	}
	s.d.Entries++
	_, had := t.Attrs[name]
	if v == nil {
		if had {
			delete(t.Attrs, name)
		}
		s.d.Obsolete += 2
		return
	}
	if had {
		s.d.Obsolete++
	}
	t.Attrs[name] = v
	if m, ok := v.(MissingRef); ok && len(s.d.Missing) < MaxMissing {
		s.d.Missing = append(s.d.Missing, MissingAt{t, name, m})
	}
}

// Encoder is the writing side of a log's dictionary: object identity →
// index (tuples and vectors by pointer, symbols by content).
type Encoder struct {
	version int
	next    uint64
	syms    map[string]uint64
	objs    map[any]uint64
}

func NewEncoder() *Encoder {
	return &Encoder{version: 5, next: 1, syms: map[string]uint64{}, objs: map[any]uint64{}}
}

// EncoderFrom inverts a decoded dictionary so appends continue it.
func EncoderFrom(d *Decoder) *Encoder {
	e := NewEncoder()
	e.next = d.Next()
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

// Next is the index the next new tuple, vector or symbol will receive.
func (e *Encoder) Next() uint64 { return e.next }

// Index is the dictionary index of a tuple or vector already written (0:
// none yet).
func (e *Encoder) Index(o any) uint64 { return e.objs[o] }

func (e *Encoder) Has(o any) bool { _, ok := e.objs[o]; return ok }

func (e *Encoder) name(b []byte, n string) []byte {
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
func persistent(t *Tuple) []string {
	names := make([]string, 0, len(t.Attrs))
	for n, v := range t.Attrs {
		if n == "." || n == ".." {
			continue
		}
		if vt, ok := v.(*Tuple); ok {
			if _, skip := vt.Attrs["no_encode"]; skip {
				continue
			}
		}
		if _, missing := v.(MissingRef); missing {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Value appends v following the encoder rules of docs/format.md,
// "Log entries and EAV records". shallow asks that a tuple already in the
// dictionary be written as a zero-entry reference (rename and link log only
// the children EAVs, not the node's subtree). visited holds the tuples
// written in this entry: a second path to one is written as a zero-entry
// reference.
func (e *Encoder) Value(b []byte, v Value, visited map[any]bool, shallow bool) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, 0x80)
	case Bytes:
		typ := typeBuffer
		if x.IsString && e.version == 5 {
			typ = typeString
		}
		b = putHeader(b, e.version, true, typ, uint64(len(x.Data)))
		return append(b, x.Data...)
	case Int:
		if e.version == 4 {
			s := fmt.Sprint(x.Mag)
			b = putHeader(b, 4, true, typeBuffer, uint64(len(s)))
			return append(b, s...)
		}
		sign := uint64(0)
		if x.Neg {
			sign = 1
		}
		b = putHeader(b, 5, true, typeInteger, sign)
		return PutVarint(b, x.Mag)
	case *Vector:
		if idx, ok := e.objs[x]; ok {
			if visited[x] || shallow {
				b = putHeader(b, e.version, false, typeVector, 0)
				return PutVarint(b, idx)
			}
			visited[x] = true
			b = putHeader(b, e.version, false, typeVector, uint64(len(x.Elems)))
			b = PutVarint(b, idx)
		} else {
			e.objs[x] = e.next
			e.next++
			visited[x] = true
			b = putHeader(b, e.version, true, typeVector, uint64(len(x.Elems)))
		}
		for _, el := range x.Elems {
			switch t := el.(type) {
			case *Tuple:
				if _, skip := t.Attrs["no_encode"]; skip {
					el = nil
				}
			case MissingRef:
				// A reference the log never defined is not written
				// back (as in a tuple, see persistent): the element
				// becomes absent.
				el = nil
			}
			b = e.Value(b, el, visited, false)
		}
		return b
	case *Tuple:
		if idx, ok := e.objs[x]; ok {
			if visited[x] || shallow {
				b = putHeader(b, e.version, false, typeTuple, 0)
				return PutVarint(b, idx)
			}
			visited[x] = true
			names := persistent(x)
			b = putHeader(b, e.version, false, typeTuple, uint64(len(names)))
			b = PutVarint(b, idx)
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

func (e *Encoder) attrs(b []byte, t *Tuple, names []string, visited map[any]bool) []byte {
	for _, n := range names {
		b = e.name(b, n)
		b = e.Value(b, t.Attrs[n], visited, false)
	}
	return b
}

// EAV encodes one EAV entry (docs/format.md, "Log entries and EAV records"):
// target (already in the dictionary) gets attribute name set to v (nil
// removes it).
func (e *Encoder) EAV(b []byte, target *Tuple, name string, v Value, shallow bool) []byte {
	idx, ok := e.objs[target]
	if !ok {
		panic("tfs: EAV on a tuple that is not in the log")
	}
	b = putHeader(b, e.version, false, typeTuple, 1)
	b = PutVarint(b, idx)
	b = e.name(b, name)
	return e.Value(b, v, map[any]bool{target: true}, shallow)
}
