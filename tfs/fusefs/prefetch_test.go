package fusefs

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"
)

// TestTreeWalkPrefetch: reading a directory's files in listing order gets
// the next ones read ahead, so the reader finds them cached; reading one
// file out of order prefetches nothing.
func TestTreeWalkPrefetch(t *testing.T) {
	v := newTestVolume(t, Config{NoOpen: true})
	const files = 12
	content := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i)}, 8192+i) }
	if err := os.Mkdir(v.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < files; i++ {
		if err := os.WriteFile(v.path(fmt.Sprintf("d/f%02d", i)), content(i), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v.remount(Config{NoOpen: true}) // cold: nothing cached, here or in the kernel

	// Out of order: one file read alone fills its own pages only.
	if _, err := os.ReadDir(v.path("d")); err != nil {
		t.Fatal(err)
	}
	before := v.fsys.CacheStats()
	if b, err := os.ReadFile(v.path("d/f05")); err != nil || !bytes.Equal(b, content(5)) {
		t.Fatalf("read f05: %v", err)
	}
	settle(v)
	if got := v.fsys.CacheStats().FillPages - before.FillPages; got != 3 {
		t.Errorf("reading one file out of order filled %d pages, want its own 3", got)
	}

	// In order: after the first two files, the rest are read ahead.
	v.remount(Config{NoOpen: true})
	if _, err := os.ReadDir(v.path("d")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if b, err := os.ReadFile(v.path(fmt.Sprintf("d/f%02d", i))); err != nil || !bytes.Equal(b, content(i)) {
			t.Fatalf("read f%02d: %v", i, err)
		}
	}
	settle(v)
	before = v.fsys.CacheStats()
	for i := 2; i < files; i++ {
		if b, err := os.ReadFile(v.path(fmt.Sprintf("d/f%02d", i))); err != nil || !bytes.Equal(b, content(i)) {
			t.Fatalf("read f%02d: %v", i, err)
		}
	}
	if st := v.fsys.CacheStats(); st.Misses != before.Misses {
		t.Errorf("a walk in listing order missed the cache on %d pages after its first files", st.Misses-before.Misses)
	}
}

// settle waits until the cache fills nothing more for a moment: prefetch
// does not wait for its reads.
func settle(v *testVolume) {
	last := int64(-1)
	for i := 0; i < 100; i++ {
		n := v.fsys.CacheStats().FillPages
		if n == last {
			return
		}
		last = n
		time.Sleep(20 * time.Millisecond)
	}
}
