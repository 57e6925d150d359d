package tfs

import (
	"crypto/rand"
	"fmt"
	"unicode/utf8"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
)

// Mkfs writes an empty TFS volume over the whole device, laid out as Nanos'
// mkfs does (tfs-format.md §2.8, §8): block 0 holds the header and a link to
// a 1024-block extension at block 1, which holds the root {children:{}}.
// The queue is unused today (writes go through the device's own completion
// path) and kept for the contract.
func Mkfs(dev blockdev.Device, q *bh.Queue, opts MkfsOptions) error {
	_ = q
	if len(opts.Label) > maxLabel || !utf8.ValidString(opts.Label) || containsNUL(opts.Label) {
		return fmt.Errorf("mkfs: label %q: want at most %d bytes of UTF-8 without NUL", opts.Label, maxLabel)
	}
	if dev.ReadOnly() {
		return fmt.Errorf("mkfs: %w", blockdev.ErrReadOnly)
	}
	const minBlocks = 1 + extBlocks
	if dev.Size() < minBlocks*blockSize {
		return fmt.Errorf("mkfs: device of %d bytes is smaller than the %d bytes of an empty log", dev.Size(), minBlocks*blockSize)
	}
	uuid := opts.UUID
	if uuid == ([16]byte{}) {
		if _, err := rand.Read(uuid[:]); err != nil {
			return fmt.Errorf("mkfs: uuid: %w", err)
		}
	}
	ext := make([]byte, extBlocks*blockSize)
	p := copy(ext, extensionHeader(extBlocks))
	enc := newEncoder()
	root := newTuple()
	root.attrs["children"] = newTuple()
	entry := enc.value(nil, root, map[any]bool{}, false)
	b := append(ext[:p], recAvailable)
	b = putVarint(b, uint64(len(entry)))
	b = putVarint(b, uint64(len(entry)))
	b = append(b, entry...)
	b = append(b, recEndOfLog)
	_ = b
	if err := blockdev.WriteAt(dev, ext, blockSize); err != nil {
		return fmt.Errorf("mkfs: write the first log extension: %w", err)
	}
	if err := blockdev.Flush(dev); err != nil {
		return fmt.Errorf("mkfs: %w", err)
	}
	// Block 0 last: until it is written the device is not a TFS volume.
	if err := blockdev.WriteAt(dev, initialBlock(uuid, opts.Label, 1, extBlocks), 0); err != nil {
		return fmt.Errorf("mkfs: write block 0: %w", err)
	}
	if err := blockdev.Flush(dev); err != nil {
		return fmt.Errorf("mkfs: %w", err)
	}
	return nil
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

// initialBlock is the image of block 0: header, UUID, label, a link to the
// second extension and END_OF_LOG.
func initialBlock(uuid [16]byte, label string, next, nblocks uint64) []byte {
	blk := make([]byte, blockSize)
	b := append(blk[:0], magic...)
	b = append(b, 5)
	b = putVarint(b, 1)
	b = append(b, uuid[:]...)
	b = append(b, label...)
	b = append(b, 0, recLink)
	b = putVarint(b, next)
	b = putVarint(b, nblocks)
	b = append(b, recEndOfLog)
	_ = b
	return blk
}
