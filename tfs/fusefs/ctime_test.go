package fusefs

import (
	"fmt"
	"os"
	"testing"
)

// TestCtimeMapDoesNotGrow: unlinked nodes leave no in-memory ctime behind.
func TestCtimeMapDoesNotGrow(t *testing.T) {
	v := newTestVolume(t, Config{})
	for i := 0; i < 50; i++ {
		p := v.path(fmt.Sprintf("f%d", i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(p, p+".2"); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(p + ".2"); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	v.root.m.ctimes.Range(func(k, val any) bool { n++; return true })
	if n != 0 {
		t.Errorf("%d in-memory ctimes remain for removed files", n)
	}
}
