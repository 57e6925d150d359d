//go:build tfsdebug

package bh

import (
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
)

const checkEnabled = true

var live struct {
	mu   sync.Mutex
	next uint64
	m    map[uint64]string
}

func checked(what string, d Done) Done {
	site := "unknown site"
	if _, file, line, ok := runtime.Caller(2); ok {
		site = fmt.Sprintf("%s:%d", file, line)
	}
	desc := what + " (created at " + site + ")"
	live.mu.Lock()
	if live.m == nil {
		live.m = map[uint64]string{}
	}
	id := live.next
	live.next++
	live.m[id] = desc
	live.mu.Unlock()
	var called atomic.Bool
	return func(err error) {
		if called.Swap(true) {
			panic(fmt.Sprintf("bh: completion %s called twice (second error: %v)", desc, err))
		}
		live.mu.Lock()
		delete(live.m, id)
		live.mu.Unlock()
		d(err)
	}
}

func outstanding() []string {
	live.mu.Lock()
	defer live.mu.Unlock()
	out := make([]string, 0, len(live.m))
	for _, d := range live.m {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}
