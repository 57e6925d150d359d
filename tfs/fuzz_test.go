package tfs

import (
	"testing"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
)

// Fuzz targets: a hostile byte string must give an error or a value, never
// a panic, a hang or a huge allocation. Run with
//
//	go test ./tfs -run '^$' -fuzz FuzzDecodeValue -fuzztime 2m
//	go test ./tfs -run '^$' -fuzz FuzzReadLog -fuzztime 2m

func FuzzDecodeValue(f *testing.F) {
	f.Add(goodRoot, uint8(5))
	f.Add([]byte{0x91, 0x88, 0x08, 'c', 'h', 'i', 'l', 'd', 'r', 'e', 'n', 0x90}, uint8(5))
	f.Add([]byte{0x11, 0x01, 0x81, 'a', 0xb0, 0x98, 0x01}, uint8(5))
	f.Add([]byte{0xa1, 0x81, 'x', 0xc3, 'a', 'b', 'c'}, uint8(4))
	f.Fuzz(func(t *testing.T, b []byte, v uint8) {
		version := 4 + int(v&1)
		d := newDecoder()
		// Seed the dictionary like a log that already holds a root, so
		// references have something to point at.
		if _, err := d.decodeEntry(goodRoot, 5); err != nil {
			t.Fatal(err)
		}
		val, err := d.decodeEntry(b, version)
		if err == nil {
			// Whatever decodes must re-encode without trouble.
			e := encoderFrom(d)
			_ = e.value(nil, val, map[any]bool{}, false)
		}
	})
}

func FuzzReadLog(f *testing.F) {
	f.Add(record(goodRoot), []byte{recEndOfLog})
	f.Add([]byte{recAvailable, 4, 2, 0x91, 0x80}, []byte{recExtended, 2, 0x81, 'a', recEndOfLog})
	f.Add(record(goodRoot), []byte{recLink, 0x88, 0x01, 1, recEndOfLog})
	q := bh.NewQueue(1)
	f.Cleanup(q.Close)
	f.Fuzz(func(t *testing.T, recs, tail []byte) {
		// Block 0 links to a 2-block extension at 1 holding recs; tail is
		// placed in block 0x81 (reachable through a fuzzed link).
		img := make([]byte, 256*blockSize)
		copy(img, initialBlock([16]byte{7}, "fz", 1, 2))
		b := append(img[blockSize:blockSize], extensionHeader(2)...)
		recs = recs[:min(len(recs), 2*blockSize-len(b))]
		copy(img[blockSize+len(b):], recs)
		hdr := append(img[0x81*blockSize:0x81*blockSize], extensionHeader(1)...)
		copy(img[0x81*blockSize+len(hdr):0x82*blockSize], tail)
		l, _, err := readLog(blockdev.NewMemoryFrom(q, img, true), 256, false)
		if err == nil && l.endPos <= 0 {
			t.Fatalf("log read without an end position")
		}
	})
}
