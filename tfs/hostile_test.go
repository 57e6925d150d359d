package tfs

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/format"
	"github.com/tfsmount/tfsmount/tfs/format/formattest"
)

// Hostile images (docs/format.md, "Limits and hostile images"): every case
// must give its specific error (or problem), never a panic, hang or huge
// allocation.

const hostileBlocks = 4096

// image builds a volume of hostileBlocks blocks: block 0 links to an
// extension of extLen blocks at block 1 whose records follow its header.
func image(extLen uint64, headerLen uint64, records ...[]byte) []byte {
	return formattest.Image(hostileBlocks, extLen, headerLen, records...)
}

func TestHostileImages(t *testing.T) {
	deep := []byte{}
	for i := 0; i < format.MaxDepth+10; i++ {
		deep = append(deep, 0x91, 0x81, 'a')
	}
	deep = append(deep, 0x90)

	cases := []struct {
		name string
		img  []byte
		want string
	}{
		{"varint over 10 bytes", image(1024, 1024, []byte{format.RecAvailable, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1}), "overflows 64 bits"},
		{"huge total", image(1024, 1024, []byte{format.RecAvailable, 0x90, 0x80, 0x80, 0x80, 0x80, 0x00, 1, 0x90}), "larger than the volume"},
		{"available past extension", image(1, 1, []byte{format.RecAvailable, 0x87, 0x04, 0x87, 0x04}), "exceeds the"},
		{"extended past extension", image(1, 1, []byte{format.RecAvailable, 0x87, 0x04, 2, 0x91, 0x80, format.RecExtended, 0x87, 0x04}), "TUPLE_EXTENDED of 900 bytes exceeds the"},
		{"extended without value", image(1024, 1024, formattest.Record(formattest.EmptyRoot), []byte{format.RecExtended, 1, 0}), "without a value in progress"},
		{"extended beyond total", image(1024, 1024, []byte{format.RecAvailable, 4, 2, 0x91, 0x80, format.RecExtended, 5, 1, 2, 3, 4, 5}), "still needs"},
		{"available while pending", image(1024, 1024, []byte{format.RecAvailable, 4, 2, 0x91, 0x80}, formattest.Record(formattest.EmptyRoot)), "is incomplete"},
		{"chunk above total", image(1024, 1024, []byte{format.RecAvailable, 1, 2, 0x90, 0x90}), "exceeds its total"},
		{"link zero length", image(1024, 1024, formattest.Record(formattest.EmptyRoot), []byte{format.RecLink, 10, 0}), "zero length"},
		{"link past end", image(1024, 1024, formattest.Record(formattest.EmptyRoot), []byte{format.RecLink, 0x81, 0x9f, 0x7f, 10}), "past the volume end"},
		{"link to block 0", image(1024, 1024, formattest.Record(formattest.EmptyRoot), []byte{format.RecLink, 0, 1}), "overlaps the log"},
		{"link cycle", image(1024, 1024, formattest.Record(formattest.EmptyRoot), []byte{format.RecLink, 1, 0x88, 0}), "overlaps the log"},
		{"header size mismatch", image(1024, 7, formattest.Record(formattest.EmptyRoot), []byte{format.RecEndOfLog}), "header says 7 blocks, but the link gave 1024"},
		{"bad version", func() []byte {
			i := image(1024, 1024, formattest.Record(formattest.EmptyRoot), []byte{format.RecEndOfLog})
			i[format.BlockSize+6] = 6
			return i
		}(), "version 6"},
		{"bad magic", func() []byte {
			i := image(1024, 1024, formattest.Record(formattest.EmptyRoot), []byte{format.RecEndOfLog})
			i[format.BlockSize] = 'X'
			return i
		}(), "bad magic"},
		{"missing END_OF_LOG", func() []byte {
			i := image(1, 1, formattest.Record(formattest.EmptyRoot))
			for k := format.BlockSize + len(format.ExtensionHeader(1)) + len(formattest.Record(formattest.EmptyRoot)); k < 2*format.BlockSize; k++ {
				i[k] = format.RecEndOfSegment
			}
			return i
		}(), "without END_OF_LOG"},
		{"unknown record", image(1024, 1024, formattest.Record(formattest.EmptyRoot), []byte{0x09}), "unknown record type 0x09"},
		{"entry count bomb", image(1024, 1024, formattest.Record([]byte{0x9f, 0xff, 0xff, 0x7f})), "claims"},
		{"undefined index", image(1024, 1024, formattest.Record(formattest.EmptyRoot), formattest.Record([]byte{0x11, 0x50, 0x81, 'a', 0x90})), "undefined index 80"},
		{"name refers to tuple", image(1024, 1024, formattest.Record(formattest.EmptyRoot), formattest.Record([]byte{0x11, 0x01, 0x01, 0x90})), "not a symbol"},
		{"tuple refers to symbol", image(1024, 1024, formattest.Record(formattest.EmptyRoot), formattest.Record([]byte{0x11, 0x02, 0x81, 'a', 0x90})), "a symbol"},
		{"integer reference", image(1024, 1024, formattest.Record(formattest.EmptyRoot), formattest.Record([]byte{0x11, 0x01, 0x81, 'a', 0x30, 5})), "reference flag"},
		{"unknown type", image(1024, 1024, formattest.Record(formattest.EmptyRoot), formattest.Record([]byte{0x11, 0x01, 0x81, 'a', 0xd0})), "unknown type 5"},
		{"deep nesting", image(1024, 1024, formattest.Record(deep)), "nested deeper"},
		{"trailing bytes", image(1024, 1024, formattest.Record(append(append([]byte{}, formattest.EmptyRoot...), 0x90))), "value ends at byte"},
		{"root not a tuple", image(1024, 1024, formattest.Record([]byte{0xc1, 'x'})), "immediate tuple"},
		{"root without children", image(1024, 1024, formattest.Record([]byte{0x90}), []byte{format.RecEndOfLog}), "no children tuple"},
	}
	q := testQueue(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Mount(blockdev.NewMemoryFrom(q, c.img, true), Options{Queue: q})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("mount: %v; want an error containing %q", err, c.want)
			}
			rep, ferr := Fsck(blockdev.NewMemoryFrom(q, c.img, true), Options{})
			if ferr != nil || rep.Clean() || !strings.Contains(rep.String(), c.want) {
				t.Fatalf("fsck: %v %v; want a problem containing %q", rep, ferr, c.want)
			}
		})
	}
}

// goodData is the content of the well-formed file "ok" that every
// malformed-entry image also holds, at block goodBlock.
const goodBlock = 3500

var goodData = pattern(99, 2*format.BlockSize)

// entryImage is a volume whose root holds kids, the good file "ok", and
// then the extra records.
func entryImage(kids map[string]*format.Tuple, extra ...[]byte) []byte {
	all := map[string]*format.Tuple{"ok": func() *format.Tuple {
		f := formattest.File(map[string][3]uint64{"0": {goodBlock, 2, 2}})
		f.Attrs["filelength"] = format.IntOf(uint64(len(goodData)))
		return f
	}()}
	for k, v := range kids {
		all[k] = v
	}
	recs := append([][]byte{formattest.Record(formattest.EncodeRoot(formattest.Dir(all)))}, extra...)
	recs = append(recs, []byte{format.RecEndOfLog})
	img := image(1024, 1024, recs...)
	copy(img[goodBlock*format.BlockSize:], goodData)
	return img
}

// TestMalformedEntries: an image with one malformed entry or extent among
// good ones mounts read-only (the rest reads exactly, the bad one is not
// shown), refuses a writable mount with a message that says what to do,
// fails fsck with the problem named, and fsck --repair leaves it clean with
// the good file intact.
func TestMalformedEntries(t *testing.T) {
	cyc := formattest.Dir(nil)
	cyc.Attrs["children"].(*format.Tuple).Attrs["self"] = cyc
	twoParents := formattest.Dir(nil)
	both := formattest.File(nil)
	both.Attrs["children"] = format.NewTuple()
	badExt := formattest.File(nil)
	badExt.Attrs["extents"].(*format.Tuple).Attrs["0"] = func() *format.Tuple {
		x := format.NewTuple()
		x.Attrs["offset"] = format.StrOf("abc")
		x.Attrs["length"] = format.IntOf(1)
		x.Attrs["allocated"] = format.IntOf(1)
		return x
	}()
	noTarget := format.NewTuple()
	noTarget.Attrs["linktarget"] = format.NewTuple()
	cases := []struct {
		name string
		img  []byte
		want string
		gone []string // entries that must not be shown read-only
	}{
		{"directory cycle", entryImage(map[string]*format.Tuple{"a": cyc}), "another place", []string{"/a/self"}},
		{"directory with two parents", entryImage(map[string]*format.Tuple{"a": twoParents, "b": twoParents}), "another place", []string{"/b"}},
		{"root as child", entryImage(nil, formattest.Record([]byte{0x11, 0x03, 0x81, 'r', 0x10, 0x01})), "another place", []string{"/r"}},
		{"bad names", entryImage(map[string]*format.Tuple{".": formattest.File(nil), "x/../../../etc/escaped": formattest.File(nil), "\xff": formattest.File(nil)}), "entry skipped", nil},
		{"entry not a node", entryImage(nil, formattest.Record([]byte{0x11, 0x03, 0x81, 'n', 0xc1, '7'})), "not a node", []string{"/n"}},
		{"reference to a missing node", entryImage(nil, formattest.Record([]byte{0x11, 0x03, 0x81, 'm', 0x10, 0x50})), "never defined", []string{"/m"}},
		{"attribute refers to a missing node", entryImage(nil, formattest.Record([]byte{0x11, 0x01, 0x84, 'c', 'o', 'n', 'f', 0x10, 0x50})), "never defined", nil},
		{"symlink without target", entryImage(map[string]*format.Tuple{"l": noTarget}), "linktarget", []string{"/l"}},
		{"dir and file", entryImage(map[string]*format.Tuple{"x": both}), "both children and extents", nil},
		{"extent not numeric", entryImage(map[string]*format.Tuple{"f": badExt}), "offset is missing or not a number", nil},
		{"extent key", entryImage(map[string]*format.Tuple{"f": formattest.File(map[string][3]uint64{"x": {3000, 1, 1}})}), "not a decimal", nil},
		{"length above allocated", entryImage(map[string]*format.Tuple{"f": formattest.File(map[string][3]uint64{"0": {3000, 2, 1}})}), "exceeds allocated", nil},
		{"zero length", entryImage(map[string]*format.Tuple{"f": formattest.File(map[string][3]uint64{"0": {3000, 0, 1}})}), "is zero", nil},
		{"extent outside volume", entryImage(map[string]*format.Tuple{"f": formattest.File(map[string][3]uint64{"0": {hostileBlocks - 1, 2, 2}})}), "outside the volume", nil},
		{"extent over log", entryImage(map[string]*format.Tuple{"f": formattest.File(map[string][3]uint64{"0": {5, 2, 2}})}), "overlap the log", nil},
		{"extents cross-linked", entryImage(map[string]*format.Tuple{"f": formattest.File(map[string][3]uint64{"0": {3000, 2, 2}}), "g": formattest.File(map[string][3]uint64{"0": {3001, 2, 2}})}), "overlap the log or another extent", nil},
		{"extents overlap in file", entryImage(map[string]*format.Tuple{"f": formattest.File(map[string][3]uint64{"0": {3000, 4, 4}, "2": {3100, 4, 4}})}), "overlap", nil},
		{"extent arithmetic overflow", entryImage(map[string]*format.Tuple{"f": formattest.File(map[string][3]uint64{"18446744073709551615": {3000, 4, 4}})}), "overflow", nil},
		{"bad filelength", entryImage(map[string]*format.Tuple{"f": func() *format.Tuple {
			f := formattest.File(nil)
			f.Attrs["filelength"] = format.StrOf("many")
			return f
		}()}), "filelength", nil},
	}
	q := testQueue(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Mount(blockdev.NewMemoryFrom(q, c.img, false), Options{Queue: q})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "-o ro") || !strings.Contains(err.Error(), "fsck --repair") {
				t.Fatalf("writable mount: %v; want a refusal naming %q, -o ro and fsck --repair", err, c.want)
			}
			var logged []string
			fs, err := Mount(blockdev.NewMemoryFrom(q, c.img, true), Options{Queue: q, Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }})
			if err != nil {
				t.Fatalf("read-only mount: %v", err)
			}
			if len(logged) == 0 || !strings.Contains(strings.Join(logged, "\n"), c.want) {
				t.Fatalf("read-only mount logged %q; want a line naming %q", logged, c.want)
			}
			checkContent(t, fs, "/ok", goodData)
			for _, p := range c.gone {
				if _, err := fs.Resolve(p); err == nil {
					t.Fatalf("%s is shown", p)
				}
			}
			walkTree(t, fs) // every listed entry can be looked up
			must(t, fs.Close())

			rep, ferr := Fsck(blockdev.NewMemoryFrom(q, c.img, true), Options{})
			if ferr != nil || rep.Clean() || !strings.Contains(rep.String(), c.want) {
				t.Fatalf("fsck: %v %v; want a problem containing %q", rep, ferr, c.want)
			}
			dev := blockdev.NewMemoryFrom(q, c.img, false)
			changes, rep, err := Repair(dev, Options{Queue: q})
			if err != nil || len(changes) == 0 || !rep.Clean() {
				t.Fatalf("repair: %v, changes %q, then %v", err, changes, rep)
			}
			if !strings.Contains(strings.Join(changes, "\n"), c.want) {
				t.Fatalf("repair changes %q do not name %q", changes, c.want)
			}
			fs = mountMem(t, dev, Options{Queue: q})
			checkContent(t, fs, "/ok", goodData)
			checkInvariants(t, fs)
			must(t, fs.Close())
		})
	}
}

func TestHostileAccepted(t *testing.T) {
	q := testQueue(t)
	// Records after a link are ignored; records in block 0 are accepted;
	// END_OF_SEGMENT is skipped.
	img := make([]byte, hostileBlocks*format.BlockSize)
	b := append(img[:0], format.InitialBlock([16]byte{2}, "b0", 0, 0)[:len(format.Magic)+2+16+3]...)
	b = append(b, format.RecEndOfSegment)
	b = append(b, formattest.Record(formattest.EmptyRoot)...)
	b = append(b, format.RecLink, 1, 0x88, 0, 0x09, 0x09)
	_ = b
	copy(img[format.BlockSize:], append(format.ExtensionHeader(1024), format.RecEndOfSegment, format.RecEndOfLog))
	fs, err := Mount(blockdev.NewMemoryFrom(q, img, true), Options{Queue: q})
	if err != nil {
		t.Fatal(err)
	}
	if fs.Label() != "b0" {
		t.Errorf("label %q", fs.Label())
	}
	fs.Close()
	// A raw file that is not TFS at all.
	_, err = Mount(blockdev.NewMemory(q, 1<<20), Options{Queue: q})
	if err == nil || !strings.Contains(err.Error(), "neither a TFS volume") {
		t.Errorf("mount of zeros: %v", err)
	}
}
