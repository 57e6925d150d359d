package tfs

import (
	"strings"
	"testing"

	"github.com/tfsmount/tfsmount/blockdev"
)

func TestVolumeDiscovery(t *testing.T) {
	q := testQueue(t)
	part := loadImage(t, "partitioned")
	raw := loadImage(t, "label")
	noRoot := append([]byte(nil), part...)
	clear(noRoot[446+16 : 446+32]) // root entry 1 emptied
	esp := append([]byte(nil), part...)
	esp[446+4] = 0xEF // entry 0 claims to be an ESP: root is entry 2 (empty)
	cases := []struct {
		name, partition string
		img             []byte
		label, err      string
	}{
		{"root by default", "", part, "rootlabel", ""},
		{"root by name", "root", part, "rootlabel", ""},
		{"boot", "boot", part, "", ""},
		{"byte offset", "12635648", part, "rootlabel", ""},
		{"offset not a multiple of 512", "100", part, "", "multiple of 512"},
		{"offset past the end", "999999999999", part, "", "multiple of 512"},
		{"bad partition name", "swap", part, "", "want root, boot"},
		{"raw", "", raw, "tfsmount-fixture-label-31bytes!", ""},
		{"boot of a raw volume", "boot", raw, "", "raw TFS volume without a partition table"},
		{"empty root entry", "", noRoot, "", "root partition entry 1 is empty"},
		{"ESP layout", "", esp, "", "root partition entry 2 is empty"},
		{"neither", "", make([]byte, 1<<20), "", "neither a TFS volume"},
		{"tiny", "", make([]byte, 100), "", "too small"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs, err := Mount(blockdev.NewMemoryFrom(q, c.img, true), Options{Queue: q, Partition: c.partition})
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("mount: %v, want an error containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer fs.Close()
			if fs.Label() != c.label {
				t.Errorf("label %q, want %q", fs.Label(), c.label)
			}
		})
	}
}
