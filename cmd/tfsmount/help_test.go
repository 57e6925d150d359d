package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/pagecache"
)

// The help text and README.md state the defaults whose one home is
// pagecache.
func TestHelpAndREADMEStateDefaults(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lineWith := func(text, key string) string {
		for _, l := range strings.Split(text, "\n") {
			if strings.Contains(l, key) {
				return l
			}
		}
		return ""
	}
	budget := fmt.Sprintf("default %dM)", pagecache.DefaultBudget>>20)
	for name, text := range map[string]string{"help": mountHelp, "README.md": string(readme)} {
		if l := lineWith(text, "cache_size=N"); !strings.Contains(l, budget) {
			t.Errorf("%s: cache_size line %q does not say %q", name, l, budget)
		}
	}
	delay := fmt.Sprintf("write-back delay of %d seconds", pagecache.DefaultWritebackDelay/time.Second)
	if !strings.Contains(string(readme), delay) {
		t.Errorf("README.md does not say %q", delay)
	}
}
