package blockdev

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/heap"
)

// imageOf makes a file of size bytes holding a known pattern.
func imageOf(t *testing.T, dir string, size int) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i/4096)
	}
	path := filepath.Join(dir, "image")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, data
}

func openT(t *testing.T, path string, opts OpenOptions) Device {
	t.Helper()
	d, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

var backends = []string{"uring", "sync"}

func TestOpenReadWriteFlushDiscard(t *testing.T) {
	for _, io := range backends {
		t.Run(io, func(t *testing.T) {
			q := bh.NewQueue(2)
			defer q.Close()
			path, data := imageOf(t, t.TempDir(), 1<<20)
			d := openT(t, path, OpenOptions{IO: io, Queue: q})
			if d.Size() != 1<<20 || d.SectorSize() != 512 || d.ReadOnly() {
				t.Fatalf("size %d sector %d ro %v", d.Size(), d.SectorSize(), d.ReadOnly())
			}
			if !strings.HasPrefix(Describe(d), map[string]string{"uring": "io_uring", "sync": "sync"}[io]) {
				t.Fatalf("Describe = %q", Describe(d))
			}
			// Misaligned read (buffered fd) and aligned read (O_DIRECT fd).
			got := make([]byte, 1000)
			if err := ReadAt(d, got, 333); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data[333:1333]) {
				t.Fatal("misaligned read returned wrong data")
			}
			pool := heap.NewPagePool(heap.PoolConfig{Budget: 1 << 20})
			pg, _ := pool.Alloc()
			copy(pg, bytes.Repeat([]byte{0xab}, 4096))
			if err := WriteAt(d, pg, 8192); err != nil {
				t.Fatal(err)
			}
			if err := Flush(d); err != nil {
				t.Fatal(err)
			}
			if err := Discard(d, 4096, 4096); err != nil {
				t.Fatal(err)
			}
			clear(pg)
			if err := ReadAt(d, pg, 4096); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pg, make([]byte, 4096)) {
				t.Fatal("discarded range does not read back as zeros")
			}
			if err := ReadAt(d, pg, 8192); err != nil || pg[0] != 0xab || pg[4095] != 0xab {
				t.Fatalf("aligned read-back failed: %v %x", err, pg[0])
			}
			pool.Free(pg)
			if err := ReadAt(d, got, d.Size()-10); !errors.Is(err, ErrOutOfRange) {
				t.Fatalf("read past the end: %v, want ErrOutOfRange", err)
			}
			st, ok := DeviceStats(d)
			if !ok || st.Reads != 4 || st.Writes != 1 || st.Flushes != 1 || st.Discards != 1 || st.Errors != 1 {
				t.Fatalf("stats %+v", st)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			onDisk, _ := os.ReadFile(path)
			if onDisk[8192] != 0xab || onDisk[4096] != 0 || onDisk[0] != data[0] {
				t.Fatal("file content wrong after close")
			}
		})
	}
}

func TestOpenSecondOpenIsRefused(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	path, _ := imageOf(t, t.TempDir(), 4096)
	openT(t, path, OpenOptions{Queue: q})
	_, err := Open(path, OpenOptions{Queue: q})
	if err == nil || !strings.Contains(err.Error(), "already in use by another tfsmount (locked)") {
		t.Fatalf("second open: %v", err)
	}
	if !errors.Is(err, ErrLocked) || !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("lock error %v does not match ErrLocked and EWOULDBLOCK", err)
	}
	if _, err := Open(path, OpenOptions{Queue: q, ReadOnly: true}); err == nil {
		t.Fatal("read-only open of an image open read-write succeeded")
	}
}

func TestOpenReadOnly(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	path, data := imageOf(t, t.TempDir(), 8192)
	os.Chmod(path, 0o400)
	for _, io := range backends {
		d, err := Open(path, OpenOptions{Queue: q, ReadOnly: true, IO: io})
		if err != nil {
			t.Fatal(err)
		}
		// Two read-only users may share the image.
		d2, err := Open(path, OpenOptions{Queue: q, ReadOnly: true, IO: io})
		if err != nil {
			t.Fatalf("second read-only open: %v", err)
		}
		d2.Close()
		if !d.ReadOnly() {
			t.Fatal("not read-only")
		}
		if err := WriteAt(d, []byte{1}, 0); !errors.Is(err, ErrReadOnly) {
			t.Fatalf("write: %v", err)
		}
		if err := Flush(d); err != nil {
			t.Fatalf("flush of a read-only device: %v", err)
		}
		got := make([]byte, 8192)
		if err := ReadAt(d, got, 0); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read: %v", err)
		}
		d.Close()
	}
}

func TestOpenTmpfsFallsBackToBuffered(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	dir, err := os.MkdirTemp("/dev/shm", "blockdev")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path, data := imageOf(t, dir, 64<<10)
	d := openT(t, path, OpenOptions{Queue: q})
	if f := d.(*uringDev).imageFile; f.dfd >= 0 {
		t.Fatalf("tmpfs image got an O_DIRECT descriptor: %s", Describe(d))
	}
	got := make([]byte, 4096)
	if err := ReadAt(d, got, 4096); err != nil || !bytes.Equal(got, data[4096:8192]) {
		t.Fatalf("read on tmpfs: %v", err)
	}
}

func TestOpenDirectChoice(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	path, _ := imageOf(t, t.TempDir(), 64<<10)
	d := openT(t, path, OpenOptions{Queue: q, IO: "sync"})
	f := d.(*syncDev).imageFile
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type == unix.TMPFS_MAGIC {
		if f.dfd >= 0 {
			t.Fatalf("tmpfs image with O_DIRECT: %s", Describe(d))
		}
		return // nothing to choose; TestOpenTmpfsFallsBackToBuffered covers it
	}
	if f.dfd < 0 {
		t.Fatalf("image on a disk file system (type %#x) without O_DIRECT: %s", fs.Type, Describe(d))
	}
	pool := heap.NewPagePool(heap.PoolConfig{Budget: 1 << 20})
	pg, _ := pool.Alloc()
	defer pool.Free(pg)
	if f.fdFor(4096, [][]byte{pg}) != f.dfd {
		t.Fatal("aligned page not sent O_DIRECT")
	}
	if f.fdFor(4096+512, [][]byte{pg[:512]}) != f.fd && f.offAlign > 512 {
		t.Fatal("misaligned request sent O_DIRECT")
	}
	odd := make([]byte, 4097)[1:]
	if uintptr(unsafe.Pointer(&odd[0]))%uintptr(f.memAlign) != 0 && f.fdFor(0, [][]byte{odd}) != f.fd {
		t.Fatal("misaligned buffer sent O_DIRECT")
	}
}

func TestOpenErrors(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	if _, err := Open("/nonexistent/image", OpenOptions{Queue: q}); err == nil || !strings.Contains(err.Error(), "/nonexistent/image") {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := Open(t.TempDir(), OpenOptions{Queue: q, ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "neither a regular file nor a block device") {
		t.Fatalf("directory: %v", err)
	}
	path, _ := imageOf(t, t.TempDir(), 4096)
	if _, err := Open(path, OpenOptions{Queue: q, IO: "spdk"}); err == nil {
		t.Fatal("unknown backend accepted")
	}
	if _, err := Open(path, OpenOptions{}); err == nil {
		t.Fatal("open without a queue accepted")
	}
}

// TestReopenRightAfterClose closes and reopens an image many times in a
// row: Close must release the image lock before it returns (the ring's
// references to registered files are dropped synchronously).
func TestReopenRightAfterClose(t *testing.T) {
	q := bh.NewQueue(1)
	defer q.Close()
	path, _ := imageOf(t, t.TempDir(), 64<<10)
	for _, io := range backends {
		for i := 0; i < 50; i++ {
			d, err := Open(path, OpenOptions{IO: io, Queue: q})
			if err != nil {
				t.Fatalf("%s open #%d: %v", io, i, err)
			}
			if err := ReadAt(d, make([]byte, 4096), 0); err != nil {
				t.Fatal(err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestFUAWrites: a FUA write (RWF_DSYNC) goes through every engine and
// both descriptors (O_DIRECT for a page-heap buffer, buffered for an
// unaligned one), on an image file and on a loop device, and lands.
func TestFUAWrites(t *testing.T) {
	path, _ := imageOf(t, t.TempDir(), 1<<20)
	out, err := exec.Command("losetup", "-f", "--show", path).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", loop).Run()
	for _, target := range []string{path, loop} {
		for _, io := range backends {
			t.Run(io+" on "+filepath.Base(target), func(t *testing.T) {
				q := bh.NewQueue(2)
				defer q.Close()
				pool := heap.NewPagePool(heap.PoolConfig{Budget: 1 << 20})
				defer pool.Close()
				d, err := Open(target, OpenOptions{IO: io, Queue: q, Pool: pool})
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				pg, _ := pool.Alloc()
				defer pool.Free(pg)
				copy(pg, bytes.Repeat([]byte{0x5a}, 4096))
				if err := WriteAtFUA(d, pg, 12288); err != nil {
					t.Fatal(err)
				}
				if err := WriteAtFUA(d, []byte("unaligned"), 777); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, 4096)
				if err := ReadAt(d, got, 12288); err != nil || !bytes.Equal(got, pg) {
					t.Fatalf("FUA write did not land: %v", err)
				}
				if err := ReadAt(d, got[:9], 777); err != nil || string(got[:9]) != "unaligned" {
					t.Fatalf("unaligned FUA write did not land: %v %q", err, got[:9])
				}
			})
		}
	}
}
