package fusefs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/tfs"
)

func TestCPUCount(t *testing.T) {
	for in, want := range map[string]int{"0\n": 1, "0-1\n": 2, "0-3,8,10-11": 7, "5": 1} {
		if got, err := cpuCount(in); err != nil || got != want {
			t.Errorf("cpuCount(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "0-", "1,,2", "3-1"} {
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

// A mount whose ring entries the kernel refuses (payload buffers too small
// for its requests) fails with the reason instead of falling back, and is
// gone at once: requests may already have been waiting for the ring, so
// the connection is ended, not unmounted politely (which could hang).
func TestURingRegisterFailureFailsTheMount(t *testing.T) {
	b, err := os.ReadFile(URingParamPath)
	if os.IsNotExist(err) {
		t.Skipf("this kernel has no FUSE over io_uring (%s missing)", URingParamPath)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(URingParamPath, []byte("Y"), 0o644); err != nil {
		t.Fatalf("turn FUSE over io_uring on: %v", err)
	}
	t.Cleanup(func() { os.WriteFile(URingParamPath, bytes.TrimSpace(b), 0o644) })
	uringPayloadForTest = 4096
	t.Cleanup(func() { uringPayloadForTest = 0 })

	v := newTestVolume(t, Config{})
	v.unmount() // the volume, mounted again below the way this test needs
	fsys, err := tfs.Mount(v.dev, tfs.Options{Queue: v.q})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	dir := t.TempDir()
	done := make(chan error, 1)
	go func() {
		srv, err := Mount(dir, NewRoot(fsys, Config{Logf: t.Logf}), MountOptions{FsName: "fusefs-test", URing: "auto", Logf: t.Logf})
		if err == nil {
			srv.Unmount()
			srv.Wait()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, errRegister) {
			t.Fatalf("mount with refused ring entries: %v, want a registration error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("mount with refused ring entries hung")
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), " "+dir+" ") {
		t.Errorf("%s is still mounted after the failed mount", dir)
	}
}
