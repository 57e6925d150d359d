package tfs

import (
	"bytes"
	"errors"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
)

// lossyDevice fails the next flush with ErrWritesLost when asked, as the
// NBD client does after a server lost its cache with the connection.
type lossyDevice struct {
	blockdev.Device
	q    *bh.Queue
	lose atomic.Bool
}

func (d *lossyDevice) Submit(r *blockdev.Request) {
	if r.Op == blockdev.OpFlush && d.lose.Swap(false) {
		done := r.Done
		d.q.PostFunc(func() { done(0, blockdev.ErrWritesLost) })
		return
	}
	d.Device.Submit(r)
}

// Once the device reports lost writes, the mount writes nothing more: the
// fsync fails, every later change fails with EIO, reads still work, and
// the volume mounts again as of its last good flush, fsck clean.
func TestLostWritesStopTheMount(t *testing.T) {
	q := testQueue(t)
	mem := newVolume(t, 16<<20, "")
	dev := &lossyDevice{Device: mem, q: q}
	var logged atomic.Int32
	fs, err := Mount(dev, Options{Queue: q, Logf: func(string, ...any) { logged.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	root := fs.Root()
	kept := mk(t)(fs.Create(root, "kept", true))
	writeAll(t, fs, kept, []byte("durable"), 0)
	must(t, fs.Fsync(kept, false))
	gone := mk(t)(fs.Create(root, "gone", true))
	writeAll(t, fs, gone, []byte("never promised"), 0)
	dev.lose.Store(true)
	if err := fs.Fsync(gone, false); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync when the device lost writes: %v, want EIO", err)
	}
	if _, err := fs.Create(root, "later", true); !errors.Is(err, syscall.EIO) {
		t.Errorf("create after lost writes: %v, want EIO", err)
	}
	if _, err := fs.Write(kept, []byte("x"), 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("write after lost writes: %v, want EIO", err)
	}
	if err := fs.Fsync(kept, false); !errors.Is(err, syscall.EIO) {
		t.Errorf("a second fsync after lost writes: %v, want EIO", err)
	}
	buf := make([]byte, 7)
	if n, err := fs.Read(kept, buf, 0); err != nil || !bytes.Equal(buf[:n], []byte("durable")) {
		t.Errorf("read after lost writes: %q, %v", buf[:n], err)
	}
	if logged.Load() == 0 {
		t.Error("nothing logged")
	}
	if err := fs.Close(); err == nil {
		t.Error("close after lost writes reported nothing")
	}
	fs = mountMem(t, mem, Options{})
	defer fs.Close()
	if _, err := fs.Resolve("/kept"); err != nil {
		t.Errorf("the file fsync'd before the loss: %v", err)
	}
	if _, err := fs.Resolve("/gone"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("the file whose fsync failed: %v, want it absent", err)
	}
}
