package format_test

import (
	"testing"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/format"
	"github.com/tfsmount/tfsmount/tfs/format/formattest"
)

// Fuzz targets: a hostile byte string must give an error or a value, never
// a panic, a hang or a huge allocation. Run with
//
//	go test ./tfs/format -run '^$' -fuzz FuzzDecodeValue -fuzztime 2m
//	go test ./tfs/format -run '^$' -fuzz FuzzReadLog -fuzztime 2m

func FuzzDecodeValue(f *testing.F) {
	f.Add(formattest.EmptyRoot, uint8(5))
	f.Add([]byte{0x91, 0x88, 0x08, 'c', 'h', 'i', 'l', 'd', 'r', 'e', 'n', 0x90}, uint8(5))
	f.Add([]byte{0x11, 0x01, 0x81, 'a', 0xb0, 0x98, 0x01}, uint8(5))
	f.Add([]byte{0xa1, 0x81, 'x', 0xc3, 'a', 'b', 'c'}, uint8(4))
	f.Fuzz(func(t *testing.T, b []byte, v uint8) {
		version := 4 + int(v&1)
		d := format.NewDecoder()
		// Seed the dictionary like a log that already holds a root, so
		// references have something to point at.
		if _, err := d.DecodeEntry(formattest.EmptyRoot, 5); err != nil {
			t.Fatal(err)
		}
		val, err := d.DecodeEntry(b, version)
		if err == nil {
			// Whatever decodes must re-encode without trouble.
			e := format.EncoderFrom(d)
			_ = e.Value(nil, val, map[any]bool{}, false)
		}
	})
}

func FuzzReadLog(f *testing.F) {
	f.Add(formattest.Record(formattest.EmptyRoot), []byte{format.RecEndOfLog})
	f.Add([]byte{format.RecAvailable, 4, 2, 0x91, 0x80}, []byte{format.RecExtended, 2, 0x81, 'a', format.RecEndOfLog})
	f.Add(formattest.Record(formattest.EmptyRoot), []byte{format.RecLink, 0x88, 0x01, 1, format.RecEndOfLog})
	q := bh.NewQueue(1)
	f.Cleanup(q.Close)
	f.Fuzz(func(t *testing.T, recs, tail []byte) {
		// Block 0 links to a 2-block extension at 1 holding recs; tail is
		// placed in block 0x81 (reachable through a fuzzed link).
		img := make([]byte, 256*format.BlockSize)
		copy(img, format.InitialBlock([16]byte{7}, "fz", 1, 2))
		b := append(img[format.BlockSize:format.BlockSize], format.ExtensionHeader(2)...)
		recs = recs[:min(len(recs), 2*format.BlockSize-len(b))]
		copy(img[format.BlockSize+len(b):], recs)
		hdr := append(img[0x81*format.BlockSize:0x81*format.BlockSize], format.ExtensionHeader(1)...)
		copy(img[0x81*format.BlockSize+len(hdr):0x82*format.BlockSize], tail)
		l, _, err := format.ReadLog(blockdev.NewMemoryFrom(q, img, true), 256, false)
		if err == nil && l.EndPos <= 0 {
			t.Fatalf("log read without an end position")
		}
	})
}
