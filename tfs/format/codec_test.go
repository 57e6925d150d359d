package format

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Varints, as in docs/format.md, "Varints", and the largest one.
func TestVarintTable(t *testing.T) {
	for _, c := range []struct {
		v   uint64
		hex string
	}{{0, "00"}, {5, "05"}, {127, "7f"}, {128, "8100"}, {300, "822c"}, {1024, "8800"}, {3073, "9801"},
		{1<<64 - 1, "81ffffffffffffffff7f"}} {
		got := PutVarint(nil, c.v)
		if hex.EncodeToString(got) != c.hex {
			t.Errorf("putVarint(%d) = %x, want %s", c.v, got, c.hex)
		}
		v, pos, err := getVarint(got, 0)
		if err != nil || v != c.v || pos != len(got) {
			t.Errorf("getVarint(%x) = %d,%d,%v", got, v, pos, err)
		}
	}
	// Non-minimal encodings are accepted; overlong or overflowing ones not.
	if v, _, err := getVarint([]byte{0x80, 0x05}, 0); err != nil || v != 5 {
		t.Errorf("non-minimal: %d %v", v, err)
	}
	for _, bad := range []string{"8080808080808080808000", "82ffffffffffffffff7f", "81", ""} {
		if _, _, err := getVarint(unhex(t, bad), 0); err == nil {
			t.Errorf("getVarint(%s) accepted", bad)
		}
	}
}

// Item headers of both versions (docs/format.md,
// "Item headers (v4 and v5)").
func TestHeaderTable(t *testing.T) {
	for _, c := range []struct {
		version int
		imm     bool
		typ     int
		l       uint64
		hex     string
	}{
		{5, true, typeBuffer, 0, "80"},
		{5, true, typeBuffer, 5, "85"},
		{5, true, typeBuffer, 8, "8808"},
		{5, true, typeString, 1000, "cf68"},
		{5, true, typeBuffer, 1024, "888800"},
		{5, true, typeTuple, 3, "93"},
		{5, false, typeTuple, 1, "11"},
		{5, true, typeInteger, 0, "b0"},
		{5, true, typeInteger, 1, "b1"},
		{5, true, typeVector, 2, "a2"},
		{4, true, typeBuffer, 31, "9f"},
		{4, true, typeBuffer, 32, "a020"},
		{4, true, typeTuple, 3, "c3"},
		{4, false, typeTuple, 1, "41"},
	} {
		got := putHeader(nil, c.version, c.imm, c.typ, c.l)
		if hex.EncodeToString(got) != c.hex {
			t.Errorf("v%d header(%v,%d,%d) = %x, want %s", c.version, c.imm, c.typ, c.l, got, c.hex)
		}
		h, pos, err := getHeader(got, 0, c.version)
		if err != nil || pos != len(got) || h != (header{c.imm, c.typ, c.l}) {
			t.Errorf("v%d getHeader(%x) = %+v,%d,%v", c.version, got, h, pos, err)
		}
	}
}

// Values (docs/format.md, "Values"): integers, strings, buffers, absence,
// null; numbers written as text are read as numbers.
func TestValueKinds(t *testing.T) {
	d := NewDecoder()
	entry := unhex(t, "94 81 61 b0 9801  81 62 c3 616263  81 63 81 00  81 64 b1 05")
	v, err := d.DecodeEntry(entry, 5)
	if err != nil {
		t.Fatal(err)
	}
	root := v.(*Tuple)
	if n, ok := NumberOf(root.Attrs["a"]); !ok || n != 3073 {
		t.Errorf("a = %v", root.Attrs["a"])
	}
	if s, ok := TextOf(root.Attrs["b"]); !ok || s != "abc" || !root.Attrs["b"].(Bytes).IsString {
		t.Errorf("b = %v", root.Attrs["b"])
	}
	if root.Attrs["c"] != NullMarker {
		t.Errorf("c = %#v, want the null marker", root.Attrs["c"])
	}
	if x := root.Attrs["d"].(Int); !x.Neg || x.Mag != 5 {
		t.Errorf("d = %v", x)
	}
	if _, ok := NumberOf(root.Attrs["d"]); ok {
		t.Error("a negative integer read as a size")
	}
	// Removal with the empty buffer, and an overwrite: 1 + 2 obsolete.
	if _, err := d.DecodeEntry(unhex(t, "1101 03 80"), 5); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DecodeEntry(unhex(t, "1101 02 c1 7a"), 5); err != nil {
		t.Fatal(err)
	}
	if _, has := root.Attrs["b"]; has {
		t.Error("b not removed")
	}
	if s, _ := TextOf(root.Attrs["a"]); s != "z" || d.Obsolete != 3 || d.Entries != 6 {
		t.Errorf("a=%v obsolete=%d entries=%d", root.Attrs["a"], d.Obsolete, d.Entries)
	}
	for _, c := range []struct {
		v    Value
		want uint64
		ok   bool
	}{{Bytes{Data: "123"}, 123, true}, {StrOf("4096"), 4096, true}, {StrOf("12x"), 0, false}, {StrOf(""), 0, false}, {NewTuple(), 0, false}} {
		if n, ok := NumberOf(c.v); n != c.want || ok != c.ok {
			t.Errorf("numberOf(%v) = %d,%v", c.v, n, ok)
		}
	}
}

// The log Nanos's mkfs wrote for a raw volume holding a 3-byte file hello,
// an empty directory d and a symlink ln -> hello, byte for byte: decode its
// four records (the whole tree, then hello's extents tuple, its extent and
// its filelength) and check the dictionary, then re-encode records 2-4 with
// the writer state inverted from that dictionary and get the same bytes.
func TestWorkedExample(t *testing.T) {
	rec1 := unhex(t, "91 88 08 6368696c6472656e 93 85 68656c6c6f 90 82 6c6e 91 88 0a 6c696e6b746172676574 c5 68656c6c6f 81 64 91 02 90")
	rec2 := unhex(t, "11 05 87 657874656e7473 90")
	rec3 := unhex(t, "11 0d 81 30 93 86 6f6666736574 b0 9801 86 6c656e677468 b0 01 88 09 616c6c6f6361746564 b0 01")
	rec4 := unhex(t, "11 05 88 0a 66696c656c656e677468 b0 03")
	if len(rec1) != 46 || len(rec2) != 11 || len(rec3) != 37 || len(rec4) != 16 {
		t.Fatalf("record lengths %d %d %d %d", len(rec1), len(rec2), len(rec3), len(rec4))
	}
	d := NewDecoder()
	if _, err := d.DecodeEntry(rec1, 5); err != nil {
		t.Fatal(err)
	}
	wantDict := map[int]string{1: "tuple", 2: "children", 3: "tuple", 4: "hello", 5: "tuple", 6: "ln", 7: "tuple", 8: "linktarget", 9: "d", 10: "tuple", 11: "tuple"}
	for i, w := range wantDict {
		got := KindName(d.dict[i])
		if s, ok := d.dict[i].(string); ok {
			got = s
		}
		if got != w {
			t.Errorf("index %d = %s, want %s", i, got, w)
		}
	}
	enc := EncoderFrom(d)
	hello := d.dict[5].(*Tuple)
	ext := NewTuple()
	if got := enc.EAV(nil, hello, "extents", ext, false); !bytes.Equal(got, rec2) {
		t.Errorf("record 2: % x\nwant      % x", got, rec2)
	}
	hello.Attrs["extents"] = ext
	x := NewTuple()
	x.Attrs["offset"] = IntOf(3073)
	x.Attrs["length"] = IntOf(1)
	x.Attrs["allocated"] = IntOf(1)
	// The doc's order is offset, length, allocated; the encoder sorts
	// names, so compare a decode of both instead of raw bytes.
	got3 := enc.EAV(nil, ext, "0", x, false)
	if len(got3) != len(rec3) {
		t.Errorf("record 3 is %d bytes, want %d", len(got3), len(rec3))
	}
	if got := enc.EAV(nil, hello, "filelength", IntOf(3), false); !bytes.Equal(got, rec4[:2]) && !bytes.Equal(got, rec4) {
		t.Errorf("record 4: % x\nwant      % x", got, rec4)
	}
	// Decoding the doc's records 2-4 after record 1 rebuilds the file.
	d2 := NewDecoder()
	for _, r := range [][]byte{rec1, rec2, rec3, rec4} {
		if _, err := d2.DecodeEntry(r, 5); err != nil {
			t.Fatal(err)
		}
	}
	h := d2.dict[5].(*Tuple)
	e0 := h.Attrs["extents"].(*Tuple).Attrs["0"].(*Tuple)
	if o, _ := NumberOf(e0.Attrs["offset"]); o != 3073 {
		t.Errorf("offset %d", o)
	}
	if n, _ := NumberOf(h.Attrs["filelength"]); n != 3 || len(d2.dict)-1 != 19 {
		t.Errorf("filelength %d, dictionary size %d (want 3, 19)", n, len(d2.dict)-1)
	}
	// Identity: the symlink target references no index; "children" of d
	// is the same symbol as the root's.
	if d2.dict[10].(*Tuple).Attrs["children"] == nil {
		t.Error("d lost its children")
	}
}

// Version 4 values: one type bit, text numbers.
func TestV4Values(t *testing.T) {
	d := NewDecoder()
	// v4: immediate tuple of 2: "a" -> "12" (buffer), "t" -> {} (tuple).
	v, err := d.DecodeEntry(unhex(t, "c2 81 61 82 3132 81 74 c0"), 4)
	if err != nil {
		t.Fatal(err)
	}
	r := v.(*Tuple)
	if n, ok := NumberOf(r.Attrs["a"]); !ok || n != 12 {
		t.Errorf("a = %v", r.Attrs["a"])
	}
	if _, ok := r.Attrs["t"].(*Tuple); !ok {
		t.Errorf("t = %v", r.Attrs["t"])
	}
}

// The encoder rules of docs/format.md, "Log entries and EAV records":
// re-serialisation by reference with all attributes, zero-entry references
// for second paths and shallow EAVs, no_encode skipped.
func TestEncoderRules(t *testing.T) {
	e := NewEncoder()
	root := NewTuple()
	root.Attrs["children"] = NewTuple()
	f := NewTuple()
	f.Attrs["extents"] = NewTuple()
	hidden := NewTuple()
	hidden.Attrs["no_encode"] = NullMarker
	c := root.Attrs["children"].(*Tuple)
	c.Attrs["a"] = f
	c.Attrs["b"] = f
	c.Attrs["h"] = hidden
	b := e.Value(nil, root, map[any]bool{}, false)
	d := NewDecoder()
	v, err := d.DecodeEntry(b, 5)
	if err != nil {
		t.Fatal(err)
	}
	dc := v.(*Tuple).Attrs["children"].(*Tuple)
	if dc.Attrs["a"] != dc.Attrs["b"] {
		t.Error("hard link identity lost")
	}
	if _, has := dc.Attrs["h"]; has {
		t.Error("no_encode child was written")
	}
	// A deep EAV re-serialises f by reference with its attributes; a
	// shallow one is a reference with zero entries.
	deep := e.EAV(nil, c, "x", f, false)
	shallow := e.EAV(nil, c, "y", f, true)
	if len(shallow) >= len(deep) || shallow[len(shallow)-2] != 0x10 {
		t.Errorf("shallow % x, deep % x", shallow, deep)
	}
	for _, r := range [][]byte{deep, shallow} {
		if _, err := d.DecodeEntry(r, 5); err != nil {
			t.Fatal(err)
		}
	}
	if dc.Attrs["x"] != dc.Attrs["a"] || dc.Attrs["y"] != dc.Attrs["a"] {
		t.Error("EAV references do not resolve to the same object")
	}
}

func TestTimeConversion(t *testing.T) {
	for _, c := range []struct{ sec, nsec int64 }{{0, 0}, {1700000000, 0}, {1700000000, 1}, {1609459201, 500000000}, {1<<31 + 5, 999999999}} {
		tm := Time(Timestamp(timeUnix(c.sec, c.nsec)))
		if tm.Unix() != c.sec || int64(tm.Nanosecond()) != c.nsec {
			t.Errorf("%d.%09d round-trips to %d.%09d", c.sec, c.nsec, tm.Unix(), tm.Nanosecond())
		}
	}
	if raw := Timestamp(timeUnix(1609459200, 0)); raw != 6912574628246323200 {
		t.Errorf("raw %d", raw)
	}
}

// Times outside what the format holds clamp to its ends; before the
// clamp, a time before 1970 wrapped around to one in 2096.
func TestTimeClamp(t *testing.T) {
	if !MaxTime.Equal(time.Unix(1<<32-1, 999999999)) {
		t.Fatalf("MaxTime = %v", MaxTime)
	}
	for _, c := range []struct {
		in, want time.Time
	}{
		{time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC), MinTime},
		{time.Unix(-1, 999999999), MinTime},
		{time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), MaxTime},
		{time.Unix(1<<32, 0), MaxTime},
		{MaxTime, MaxTime},
		{time.Unix(1<<32-1, 5), time.Unix(1<<32-1, 5)},
		{MinTime, MinTime},
	} {
		if got := Time(Timestamp(c.in)); !got.Equal(c.want) {
			t.Errorf("%v stored as %v, want %v", c.in.UTC(), got.UTC(), c.want.UTC())
		}
	}
}

func timeUnix(sec, nsec int64) time.Time { return time.Unix(sec, nsec) }
