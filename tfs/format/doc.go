// Package format is the TFS on-disk format of the Nanos unikernel, and
// nothing above it: the value codec (tuples, vectors, buffers, strings,
// integers), the dictionary that a log's references index, the log of
// extensions and records and its replay, volume discovery in raw and
// MBR-partitioned images, and the layout mkfs writes. It knows nothing of
// files or directories: package tfs builds its model from the tuples a
// replay yields and hands back tuples to encode.
//
// docs/format.md describes the bytes; the names here follow it.
package format
