package tfs

import (
	"reflect"
	"testing"

	"github.com/tfsmount/tfsmount/tfs/format"
)

// TestDiscardRangesJoinsNeighbours: freed ranges become device byte
// ranges, sorted, with touching ones joined into one discard.
func TestDiscardRangesJoinsNeighbours(t *testing.T) {
	got := discardRanges([][2]uint64{{30, 10}, {10, 5}, {15, 5}, {40, 2}, {100, 1}, {20, 0}})
	want := [][2]int64{{10 * format.BlockSize, 10 * format.BlockSize}, {30 * format.BlockSize, 12 * format.BlockSize}, {100 * format.BlockSize, format.BlockSize}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("discardRanges = %v, want %v", got, want)
	}
}
