// Package formattest builds TFS log images byte by byte for tests that
// need a volume no writer would make: hostile, torn or hand-laid logs.
package formattest

import "github.com/tfsmount/tfsmount/tfs/format"

// Record frames one complete encoded value as a TUPLE_AVAILABLE record.
func Record(v []byte) []byte {
	b := []byte{format.RecAvailable}
	b = format.PutVarint(b, uint64(len(v)))
	b = format.PutVarint(b, uint64(len(v)))
	return append(b, v...)
}

// Image is a volume of blocks blocks whose block 0 links to an extension of
// extLen blocks at block 1; that extension's header claims headerLen blocks
// and its records follow the header.
func Image(blocks, extLen, headerLen uint64, records ...[]byte) []byte {
	img := make([]byte, blocks*format.BlockSize)
	copy(img, format.InitialBlock([16]byte{1}, "h", 1, extLen))
	b := append(img[format.BlockSize:format.BlockSize], format.ExtensionHeader(headerLen)...)
	for _, r := range records {
		b = append(b, r...)
	}
	return img
}

// EncodeRoot encodes root as the first record of a new log.
func EncodeRoot(root *format.Tuple) []byte {
	return format.NewEncoder().Value(nil, root, map[any]bool{}, false)
}

// Dir is a directory tuple with the given children.
func Dir(kids map[string]*format.Tuple) *format.Tuple {
	c := format.NewTuple()
	for k, v := range kids {
		c.Attrs[k] = v
	}
	t := format.NewTuple()
	t.Attrs["children"] = c
	return t
}

// File is a file tuple with the given extents, each named by its key and
// given as {file block, length, allocated}.
func File(extents map[string][3]uint64) *format.Tuple {
	t := format.NewTuple()
	et := format.NewTuple()
	for k, x := range extents {
		e := format.NewTuple()
		e.Attrs["offset"] = format.IntOf(x[0])
		e.Attrs["length"] = format.IntOf(x[1])
		e.Attrs["allocated"] = format.IntOf(x[2])
		et.Attrs[k] = e
	}
	t.Attrs["extents"] = et
	return t
}

// EmptyRoot is the encoding of a root with no children.
var EmptyRoot = EncodeRoot(Dir(nil))
