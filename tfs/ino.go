package tfs

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"syscall"

	"github.com/tfsmount/tfsmount/tfs/format"
)

// Inode numbers and generations.
//
// TFS stores no inode numbers (docs/format.md,
// "Inode numbers (not on disk)"), but NFS-style file handles
// (name_to_handle_at, open_by_handle_at, an NFS export of the mount) need a
// number that names the same file after the kernel forgot it and after a
// remount. The log's dictionary index of a node's tuple (docs/format.md,
// "The dictionary") is such a number: every mount of the same log replays
// the same indices, and a new tuple gets the next index when its record is
// staged.
//
// A compaction starts a new dictionary, so indices are only meaningful
// within one log generation, and a mount that compacts must not hand the
// kernel a number it already gave to another node. Hence:
//
//   - ino = inoBase + index, where inoBase is 0 for the log generation a
//     mount starts with and grows past every index of the old generation at
//     each compaction during the mount. Nodes keep the number they were
//     given; only new nodes get numbers from the new generation.
//   - gen is a checksum of the generation's first value (the root tuple
//     record, which for a compacted log holds the whole tree) and inoBase.
//     A handle from another log generation, or from a numbering with another
//     base, carries another gen, and the kernel answers ESTALE for it.
//   - The root is always 1 with gen 0: index 1 is the root in every log.
//
// Invariant (checked by checkInvariants in tests): byIno maps the number
// of every linked node to that node and nothing else; no two nodes ever
// share a number during a mount.

// spareInoBase starts the numbers of nodes whose tuple the log could not
// index; they are never stable across mounts. (Its value is MaxFileSize's,
// but it is an inode number, not a size.)
const spareInoBase = 1 << 62

// genOf is the generation of the numbering with base within the log
// generation whose first value has checksum sum.
func genOf(sum uint32, base uint64) uint32 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], base)
	return crc32.Update(sum, format.Castagnoli, b[:])
}

// numberTree gives every node built from the log (nodes of them) its
// dictionary index.
func (fs *FS) numberTree(d *format.Decoder, nodes int) {
	fs.byIno = make(map[uint64]*Node, nodes)
	fs.gen = genOf(fs.log.FirstSum, 0)
	fs.spareIno = spareInoBase
	for i := uint64(1); i < d.Next(); i++ {
		if n := nodeOf(d.Object(i)); n != nil && n.ino == 0 {
			fs.numberNode(n, i)
		}
	}
}

// numberNode gives n the number base + index (or a spare one when index
// is 0) and the current generation.
func (fs *FS) numberNode(n *Node, index uint64) {
	switch {
	case n == fs.root:
		n.ino, n.gen = 1, 0
	case index == 0:
		n.ino, n.gen = fs.spareIno, fs.gen
		fs.spareIno++
	default:
		n.ino, n.gen = fs.inoBase+index, fs.gen
	}
	fs.byIno[n.ino] = n
}

// setIno numbers a node created during the mount, after its tuple was
// staged in the log. Caller holds mu.
func (fs *FS) setIno(n *Node) {
	var index uint64
	if fs.w != nil {
		index = fs.w.enc.Index(n.t)
	}
	fs.numberNode(n, index)
}

// forgetIno drops n, which lost its last link, from byIno: a handle to a
// deleted file is stale even while the file is still open. Caller holds mu.
func (fs *FS) forgetIno(n *Node) {
	if fs.byIno[n.ino] == n {
		delete(fs.byIno, n.ino)
	}
}

// renumberAfterCompaction moves the numbering of new nodes past every
// index old gave out; newSum is the new log's firstSum. Caller holds mu.
func (fs *FS) renumberAfterCompaction(old *logWriter, newSum uint32) {
	fs.inoBase += old.enc.Next()
	fs.log.FirstSum = newSum
	fs.gen = genOf(newSum, fs.inoBase)
}

// NodeByIno returns the linked node with inode number ino (ENOENT if there
// is none). The caller compares the generation it holds with Attr.Gen.
func (fs *FS) NodeByIno(ino uint64) (*Node, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n := fs.byIno[ino]
	if n == nil || (n != fs.root && n.links == 0) {
		return nil, errnoErr(fmt.Sprintf("inode %d", ino), syscall.ENOENT)
	}
	return n, nil
}

// Parent returns the directory holding dir and dir's name in it, for a
// kernel reconnecting a directory found by handle. The root has no parent
// (ENOENT), nor has a removed directory.
func (fs *FS) Parent(dir *Node) (*Node, string, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if dir.kind != KindDir {
		return nil, "", errnoErr("parent of a non-directory", syscall.ENOTDIR)
	}
	if dir == fs.root || dir.links == 0 || dir.parent == nil {
		return nil, "", errnoErr(fmt.Sprintf("parent of inode %d", dir.ino), syscall.ENOENT)
	}
	p := dir.parent
	c, err := fs.children(p)
	if err != nil {
		return nil, "", err
	}
	for name, v := range c.Attrs {
		if v == dir.t {
			return p, name, nil
		}
	}
	return nil, "", errnoErr(fmt.Sprintf("inode %d is not in its parent", dir.ino), syscall.ENOENT)
}
