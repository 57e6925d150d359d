package tests

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRenameRaces lets goroutines rename and exchange files and directories
// on one mount at the same time. Renames never use plain replace, so no name
// may be lost or duplicated: afterwards every file id exists exactly once,
// before and after a remount, and fsck is clean.
func TestRenameRaces(t *testing.T) {
	m := freshMount(t, "64M")
	const nfiles, ndirs = 60, 5
	for d := 0; d < ndirs; d++ {
		os.Mkdir(m.Path(fmt.Sprintf("dir%d", d)), 0o755)
	}
	for i := 0; i < nfiles; i++ {
		mustWriteFile(t, m.Path(fmt.Sprintf("dir%d", i%ndirs), fmt.Sprintf("f%d", i)), []byte(fmt.Sprintf("id-%d", i)))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var unexpected []string
	var renames, exchanges int
	stop := time.Now().Add(4 * time.Second)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(seed int64) {
			defer wg.Done()
			r := rand.New(rand.NewSource(seed))
			// Sources come from a fresh listing of a random directory, so
			// most operations find something to move; the others lose a
			// race with another goroutine (ENOENT, EEXIST...), which is
			// an expected outcome.
			dirs := func() []string {
				ds := []string{m.Dir}
				for d := 0; d < ndirs; d++ {
					ds = append(ds, m.Path(fmt.Sprintf("dir%d", d)))
					ds = append(ds, m.Path(fmt.Sprintf("dir%d", r.Intn(ndirs)), fmt.Sprintf("dir%d", d)))
				}
				return ds
			}
			existing := func() string {
				dir := dirs()[r.Intn(2*ndirs+1)]
				f, err := os.Open(dir)
				if err == nil {
					names, _ := f.Readdirnames(-1)
					f.Close()
					if len(names) > 0 {
						return filepath.Join(dir, names[r.Intn(len(names))])
					}
				}
				return filepath.Join(dir, fmt.Sprintf("f%d", r.Intn(nfiles)))
			}
			fresh := func() string {
				dir := dirs()[r.Intn(2*ndirs+1)]
				if r.Intn(6) == 0 {
					return filepath.Join(dir, fmt.Sprintf("dir%d", r.Intn(ndirs)))
				}
				return filepath.Join(dir, fmt.Sprintf("f%d", r.Intn(nfiles)))
			}
			pick := func(exchange bool) (string, string) {
				if exchange {
					return existing(), existing()
				}
				return existing(), fresh()
			}
			for time.Now().Before(stop) {
				exchange := r.Intn(2) == 0
				a, b := pick(exchange)
				var err error
				if exchange {
					err = unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
				} else {
					err = unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_NOREPLACE)
				}
				mu.Lock()
				switch errnoOf(err) {
				case 0:
					if exchange {
						exchanges++
					} else {
						renames++
					}
				case unix.ENOENT, unix.EEXIST, unix.EINVAL, unix.ENOTDIR, unix.EISDIR, unix.ENOTEMPTY:
				default:
					unexpected = append(unexpected, fmt.Sprintf("%s -> %s (exchange=%v): %v", a, b, exchange, err))
				}
				mu.Unlock()
			}
		}(int64(g))
	}
	wg.Wait()
	for _, u := range unexpected {
		t.Errorf("unexpected rename error: %s", u)
	}
	if renames == 0 || exchanges == 0 {
		t.Errorf("the race did nothing: %d renames, %d exchanges succeeded", renames, exchanges)
	}
	t.Logf("%d renames and %d exchanges succeeded", renames, exchanges)
	checkIDs := func() {
		t.Helper()
		count := map[string]int{}
		dirsSeen := 0
		filepath.Walk(m.Dir, func(p string, info os.FileInfo, err error) error {
			if err != nil {
				t.Errorf("walk %s: %v", p, err)
				return nil
			}
			if info.IsDir() {
				dirsSeen++
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Errorf("read %s: %v", p, err)
			}
			count[string(b)]++
			return nil
		})
		if dirsSeen != ndirs+1 {
			t.Errorf("%d directories after the race, want %d", dirsSeen, ndirs+1)
		}
		var bad []string
		for i := 0; i < nfiles; i++ {
			id := fmt.Sprintf("id-%d", i)
			if count[id] != 1 {
				bad = append(bad, fmt.Sprintf("%s x%d", id, count[id]))
			}
			delete(count, id)
		}
		for id, n := range count {
			bad = append(bad, fmt.Sprintf("stray %q x%d", id, n))
		}
		sort.Strings(bad)
		if len(bad) > 0 {
			t.Errorf("files lost or duplicated: %s", strings.Join(bad, ", "))
		}
	}
	checkIDs()
	m = m.remount()
	checkIDs()
	m.finish()
}
