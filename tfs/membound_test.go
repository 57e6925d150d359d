package tfs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/format"
	"github.com/tfsmount/tfsmount/tfs/format/formattest"
)

// A crafted image that claims huge counts (entries, elements, a value's
// length, an extension, extents, a file size) must mount or fail within a
// fixed memory budget, whatever it claims: the claims are checked against
// the bytes that are really there before anything is allocated for them.
// Each image is mounted read-only in a child process (this test binary,
// run again) whose peak RSS is measured.

// memBudget is the most a child may use, mount included: the Go runtime,
// the test binary and a page cache of at most 16 MiB take about 30 MiB.
const memBudget = 128 << 20

const memChildEnv = "TFS_MEMBOUND_IMAGE"

// TestMemBoundChild is the child: it mounts the image named by the
// environment read-only, reads a little of every file, and reports.
func TestMemBoundChild(t *testing.T) {
	path := os.Getenv(memChildEnv)
	if path == "" {
		t.Skip("the child of TestMemoryBoundOnHostileImages")
	}
	q := bh.NewQueue(2)
	defer q.Close()
	dev, err := blockdev.Open(path, blockdev.OpenOptions{ReadOnly: true, Queue: q})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	// The peak is this process's own (VmHWM of the memory map exec gave
	// it): the parent's rusage would count the parent too, since Go
	// starts children with vfork and exec records the old map's peak.
	defer func() {
		b, _ := os.ReadFile("/proc/self/status")
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmHWM:") {
				fmt.Println("peak", strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:")))
			}
		}
	}()
	fs, err := Mount(dev, Options{Queue: q, ReadOnly: true, CacheSize: 16 << 20})
	if err != nil {
		fmt.Println("mount failed:", err)
		return
	}
	defer fs.Close()
	buf := make([]byte, 1<<20)
	for _, n := range walkTree(t, fs) {
		if a := fs.Getattr(n); a.Kind == KindFile {
			for _, off := range []int64{0, a.Size / 2, a.Size - 1} {
				if off >= 0 && off < a.Size {
					if _, err := fs.Read(n, buf, off); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	fmt.Println("mounted")
}

// sparseImage writes img at the start of a sparse file of size bytes.
func sparseImage(t *testing.T, img []byte, size int64) string {
	p := filepath.Join(t.TempDir(), "hostile.img")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMemoryBoundOnHostileImages(t *testing.T) {
	const big = 64 << 30 // a sparse 64 GiB volume
	huge := func(header ...byte) []byte {
		return formattest.Record(append(header, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f))
	}
	valueClaim := func() []byte {
		b := format.PutVarint(format.PutVarint([]byte{format.RecAvailable}, big-format.BlockSize*4), 4)
		return append(b, 0x91, 0x81, 'a', 0x90, format.RecEndOfLog)
	}()
	bigFile := formattest.File(map[string][3]uint64{"0": {3000, 1, 1}})
	bigFile.Attrs["filelength"] = format.IntOf(MaxFileSize)
	hugeExtent := formattest.File(map[string][3]uint64{"0": {3000, 1 << 40, 1 << 40}})
	cases := []struct {
		name   string
		img    []byte
		size   int64
		mounts bool
	}{
		{"tuple claims 2^53 entries", image(1024, 1024, huge(0x9f)), 4096 * format.BlockSize, false},
		{"vector claims 2^53 elements", image(1024, 1024, formattest.Record(formattest.EncodeRoot(formattest.Dir(nil))), huge(0x11, 0x01, 0x81, 'v', 0xaf)), 4096 * format.BlockSize, false},
		{"name claims 2^53 bytes", image(1024, 1024, huge(0x91, 0x8f)), 4096 * format.BlockSize, false},
		{"value claims the whole volume", image(1024, 1024, valueClaim), big, false},
		{"link to a 64 GiB extension", func() []byte {
			img := make([]byte, 4096*format.BlockSize)
			copy(img, format.InitialBlock([16]byte{9}, "h", 1, big/format.BlockSize-2))
			return img
		}(), big, false},
		{"file claims 4 EiB", image(1024, 1024, formattest.Record(formattest.EncodeRoot(formattest.Dir(map[string]*format.Tuple{"f": bigFile}))), []byte{format.RecEndOfLog}), big, true},
		{"extent claims 2^40 blocks", image(1024, 1024, formattest.Record(formattest.EncodeRoot(formattest.Dir(map[string]*format.Tuple{"f": hugeExtent}))), []byte{format.RecEndOfLog}), big, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := sparseImage(t, c.img, c.size)
			cmd := exec.Command(os.Args[0], "-test.run=^TestMemBoundChild$", "-test.v")
			cmd.Env = append(os.Environ(), memChildEnv+"="+path)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			var kib int64
			for _, l := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(l, "peak ") {
					fmt.Sscanf(l, "peak %d kB", &kib)
				}
			}
			if kib == 0 {
				t.Fatalf("the child reported no peak RSS:\n%s", out)
			}
			peak := kib << 10
			t.Logf("peak RSS %d MiB; %s", peak>>20, firstLine(string(out)))
			if peak > memBudget {
				t.Errorf("peak RSS %d MiB, budget %d MiB", peak>>20, memBudget>>20)
			}
			if got := strings.Contains(string(out), "\nmounted\n") || strings.HasPrefix(string(out), "mounted\n"); got != c.mounts {
				t.Errorf("mounted: %v, want %v:\n%s", got, c.mounts, out)
			}
		})
	}
}

func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "mount") {
			return l
		}
	}
	return ""
}
