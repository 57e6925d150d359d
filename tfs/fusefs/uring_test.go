package fusefs

import (
	"encoding/binary"
	"testing"
)

func TestCPUCount(t *testing.T) {
	for in, want := range map[string]int{"0\n": 1, "0-1\n": 2, "0-3,8,10-11": 12, "5": 6} {
		if got, err := cpuCount(in); err != nil || got != want {
			t.Errorf("cpuCount(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "0-", "1,,2"} {
		if _, err := cpuCount(bad); err == nil {
			t.Errorf("cpuCount(%q) accepted", bad)
		}
	}
}

// The reaper serves itself only requests that just read, and reads only
// while they are small.
func TestQuickOp(t *testing.T) {
	hdr := make([]byte, uringHeaderSize)
	req := func(op, readSize uint32) []byte {
		binary.LittleEndian.PutUint32(hdr[4:], op)
		binary.LittleEndian.PutUint32(hdr[uringOpInOff+16:], readSize)
		return hdr
	}
	for _, c := range []struct {
		name      string
		op, size  uint32
		wantQuick bool
	}{
		{"LOOKUP", 1, 0, true},
		{"GETATTR", 3, 0, true},
		{"READ 4 KiB", 15, 4096, true},
		{"READ 64 KiB", 15, quickReadMax, true},
		{"READ 1 MiB", 15, 1 << 20, false},
		{"READDIRPLUS", 44, 0, true},
		{"WRITE", 16, 0, false},
		{"FSYNC", 20, 0, false},
		{"CREATE", 35, 0, false},
		{"SETATTR", 4, 0, false},
	} {
		if got := quickOp(req(c.op, c.size)); got != c.wantQuick {
			t.Errorf("%s: quick %v, want %v", c.name, got, c.wantQuick)
		}
	}
}
