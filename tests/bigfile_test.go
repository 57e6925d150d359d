package tests

import (
	"bufio"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestBigFileCopy copies a 200 MiB file in with cp through the mount, reads
// it back, copies it out again after a remount, and compares hashes.
func TestBigFileCopy(t *testing.T) {
	const size = 200 << 20
	host := filepath.Join(t.TempDir(), "big.src")
	f, err := os.Create(host)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	r := rand.New(rand.NewSource(200))
	buf := make([]byte, 1<<20)
	for i := 0; i < size/len(buf); i++ {
		r.Read(buf)
		w.Write(buf)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want := sha256File(t, host)

	m := freshMount(t, "512M")
	if out, err := exec.Command("cp", host, m.Path("big")).CombinedOutput(); err != nil {
		t.Fatalf("cp into the mount: %v %s", err, out)
	}
	if got := sha256File(t, m.Path("big")); got != want {
		t.Errorf("200 MiB file read back through the same mount differs")
	}
	m = m.remount()
	var st os.FileInfo
	if st, err = os.Stat(m.Path("big")); err != nil || st.Size() != size {
		t.Fatalf("after remount: %v, size want %d", err, size)
	}
	out := filepath.Join(t.TempDir(), "big.out")
	if o, err := exec.Command("cp", m.Path("big"), out).CombinedOutput(); err != nil {
		t.Fatalf("cp out of the mount: %v %s", err, o)
	}
	if got := sha256File(t, out); got != want {
		t.Errorf("200 MiB file copied out after remount differs")
	}
	m.finish()
}
