package format

import (
	"crypto/rand"
	"fmt"
	"unicode/utf8"

	"github.com/tfsmount/tfsmount/blockdev"
)

// MkfsOptions configure Mkfs.
type MkfsOptions struct {
	Label string   // at most MaxLabel bytes
	UUID  [16]byte // zero: random
}

// Mkfs writes an empty TFS volume over the whole device, laid out as Nanos'
// mkfs does (docs/format.md, "Worked example"): block 0 holds the header and
// a link to a 1024-block extension at block 1, which holds the root
// {children:{}}.
func Mkfs(dev blockdev.Device, opts MkfsOptions) error {
	if len(opts.Label) > MaxLabel || !utf8.ValidString(opts.Label) || containsNUL(opts.Label) {
		return fmt.Errorf("mkfs: label %q: want at most %d bytes of UTF-8 without NUL", opts.Label, MaxLabel)
	}
	if dev.ReadOnly() {
		return fmt.Errorf("mkfs: %w", blockdev.ErrReadOnly)
	}
	const minBlocks = 1 + ExtBlocks
	if dev.Size() < minBlocks*BlockSize {
		return fmt.Errorf("mkfs: device of %d bytes is smaller than the %d bytes of an empty log", dev.Size(), minBlocks*BlockSize)
	}
	uuid := opts.UUID
	if uuid == ([16]byte{}) {
		if _, err := rand.Read(uuid[:]); err != nil {
			return fmt.Errorf("mkfs: uuid: %w", err)
		}
	}
	ext := make([]byte, ExtBlocks*BlockSize)
	p := copy(ext, ExtensionHeader(ExtBlocks))
	enc := NewEncoder()
	root := NewTuple()
	root.Attrs["children"] = NewTuple()
	entry := enc.Value(nil, root, map[any]bool{}, false)
	b := append(ext[:p], RecAvailable)
	b = PutVarint(b, uint64(len(entry)))
	b = PutVarint(b, uint64(len(entry)))
	b = append(b, entry...)
	b = append(b, RecEndOfLog)
	_ = b
	if err := blockdev.WriteAt(dev, ext, BlockSize); err != nil {
		return fmt.Errorf("mkfs: write the first log extension: %w", err)
	}
	if err := blockdev.Flush(dev); err != nil {
		return fmt.Errorf("mkfs: %w", err)
	}
	// Block 0 last: until it is written the device is not a TFS volume.
	if err := blockdev.WriteAt(dev, InitialBlock(uuid, opts.Label, 1, ExtBlocks), 0); err != nil {
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

// InitialBlock is the image of block 0: header, UUID, label, a link to the
// second extension and END_OF_LOG.
func InitialBlock(uuid [16]byte, label string, next, nblocks uint64) []byte {
	blk := make([]byte, BlockSize)
	b := append(blk[:0], Magic...)
	b = append(b, 5)
	b = PutVarint(b, 1)
	b = append(b, uuid[:]...)
	b = append(b, label...)
	b = append(b, 0, RecLink)
	b = PutVarint(b, next)
	b = PutVarint(b, nblocks)
	b = append(b, RecEndOfLog)
	_ = b
	return blk
}
