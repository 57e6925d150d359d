package format_test

import (
	"errors"
	"syscall"
	"testing"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/format"
	"github.com/tfsmount/tfsmount/tfs/format/formattest"
)

// A log the format cannot read reports ErrCorrupt; a device that cannot be
// read reports its own error and not corruption.
func TestErrCorrupt(t *testing.T) {
	q := bh.NewQueue(1)
	t.Cleanup(q.Close)
	const blocks = 2048
	read := func(dev blockdev.Device) error {
		_, _, err := format.ReadLog(dev, blocks, false)
		return err
	}
	good := formattest.Image(blocks, 1024, 1024, formattest.Record(formattest.EmptyRoot), []byte{format.RecEndOfLog})
	if err := read(blockdev.NewMemoryFrom(q, good, true)); err != nil {
		t.Fatalf("good log: %v", err)
	}
	for name, img := range map[string][]byte{
		"unknown record type": formattest.Image(blocks, 1024, 1024, formattest.Record(formattest.EmptyRoot), []byte{0x7e}),
		"header length lies":  formattest.Image(blocks, 1024, 99, formattest.Record(formattest.EmptyRoot), []byte{format.RecEndOfLog}),
		"link out of volume":  formattest.Image(blocks, 1024, 1024, formattest.Record(formattest.EmptyRoot), []byte{format.RecLink, 0x90, 0x00, 1, format.RecEndOfLog}),
		"truncated value":     formattest.Image(blocks, 1024, 1024, formattest.Record([]byte{0x91, 0x81}), []byte{format.RecEndOfLog}),
	} {
		if err := read(blockdev.NewMemoryFrom(q, img, true)); !errors.Is(err, format.ErrCorrupt) {
			t.Errorf("%s: %v; want ErrCorrupt", name, err)
		}
	}
	dev := blockdev.NewFaulty(blockdev.NewMemoryFrom(q, good, true), q)
	dev.FailNth(2, syscall.EIO) // the first extension after block 0
	if err := read(dev); err == nil || errors.Is(err, format.ErrCorrupt) || !errors.Is(err, syscall.EIO) {
		t.Errorf("device read error: %v; want EIO and not ErrCorrupt", err)
	}
}
