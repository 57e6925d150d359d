package tests

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pkg/xattr"
	"golang.org/x/sys/unix"

	"github.com/tfsmount/tfsmount/blockdev"
)

// TestCrashStatesOfARealMount runs a workload through a real mount whose
// daemon records every write and flush it sends its device
// (TFSMOUNT_CRASH_RECORD), then rebuilds images a power cut could have
// left, at flush and FUA completions, with none, all, or random subsets
// (some torn) of the writes after them, and checks each with the binary:
// fsck is clean, get extracts the tree, every file's bytes are its own (by
// the stamps the workload wrote) or zeros, and every tenth image is mounted
// read-only and read through FUSE. The last state must hold exactly what
// the workload left. tfs/crashsim_test.go checks the same in-process with
// fsync promises and many more states; this shows the daemon, FUSE and the
// io_uring device behave as the package does.
func TestCrashStatesOfARealMount(t *testing.T) {
	requireFUSE(t)
	img := newImage(t, "16M")
	base, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	recPath := filepath.Join(t.TempDir(), "recording")
	t.Setenv("TFSMOUNT_CRASH_RECORD", recPath)
	m := mountImage(t, img)
	wl := &crashWorkload{t: t, root: m.Path(), rng: rand.New(rand.NewSource(11)), data: map[string][]byte{}, everAt: map[string]map[uint32]bool{}, ids: map[string]uint32{}, next: 1}
	wl.run(160)
	m.Unmount()
	os.Unsetenv("TFSMOUNT_CRASH_RECORD")
	requireFsckClean(t, img)

	f, err := os.Open(recPath)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := blockdev.LoadRecording(f, base)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pts := rec.CrashPoints()
	rng := rand.New(rand.NewSource(12))
	const sample = 30
	if len(pts) > sample {
		last := pts[len(pts)-1]
		rng.Shuffle(len(pts)-1, func(i, j int) { pts[i], pts[j] = pts[j], pts[i] })
		pts = append(pts[:sample-1], last)
		sort.Ints(pts)
	}
	state := filepath.Join(t.TempDir(), "state.img")
	prev := make([]byte, len(base))
	if err := os.WriteFile(state, prev, 0o644); err != nil {
		t.Fatal(err)
	}
	w := rec.Walker()
	checked := 0
	for _, at := range pts {
		w.Advance(at)
		pending := w.Pending()
		kinds := []string{"none kept", "all kept", "random subset", "random subset, some torn"}
		if len(pending) == 0 {
			kinds = kinds[:1]
		}
		for _, kind := range kinds {
			var kept []blockdev.Kept
			for _, p := range pending {
				k := blockdev.Kept{Index: p.Index}
				switch {
				case kind == "none kept":
					continue
				case kind != "all kept" && rng.Intn(2) == 0:
					continue
				case kind == "random subset, some torn" && p.Sectors > 1:
					k.Sectors = make([]bool, p.Sectors)
					for i := range k.Sectors {
						k.Sectors[i] = rng.Intn(2) == 0
					}
				}
				kept = append(kept, k)
			}
			cur := w.Image(kept)
			writeChanged(t, state, prev, cur)
			prev = cur
			where := fmt.Sprintf("crash before event %d of %d, %s of %d pending writes", at, rec.Events(), kind, len(pending))
			wl.checkState(state, where, checked%10 == 0)
			if at == rec.Events() && (kind == "all kept" || len(pending) == 0) {
				wl.checkFinal(state)
			}
			checked++
		}
	}
	t.Logf("%d crash points, %d states checked (of %d points, %d writes recorded)", len(pts), checked, len(rec.CrashPoints()), rec.Writes())
}

// writeChanged brings the image file at path from prev to cur, writing
// only the 4 KiB blocks that differ.
func writeChanged(t *testing.T, path string, prev, cur []byte) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off := 0; off < len(cur); off += 4096 {
		end := min(off+4096, len(cur))
		if !bytes.Equal(prev[off:end], cur[off:end]) {
			if _, err := f.WriteAt(cur[off:end], int64(off)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// crashWorkload changes files through the mount and keeps what each path
// should hold and which files were ever at it.
type crashWorkload struct {
	t      *testing.T
	root   string
	rng    *rand.Rand
	data   map[string][]byte          // path (relative) -> content
	ids    map[string]uint32          // path -> file id now there
	everAt map[string]map[uint32]bool // path -> every file id ever there
	next   uint32
	writes uint32
}

// crashStamp is n bytes written by write w of file id at offset off: in
// every 16 bytes a magic, the file id, the write number and the offset.
func crashStamp(id, w uint32, off int64, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 16 {
		binary.LittleEndian.PutUint16(b[i:], 0x5354)
		binary.LittleEndian.PutUint32(b[i+2:], id)
		binary.LittleEndian.PutUint32(b[i+6:], w)
		o := uint64(off+int64(i)) / 16
		binary.LittleEndian.PutUint32(b[i+10:], uint32(o))
		binary.LittleEndian.PutUint16(b[i+14:], uint16(o>>32))
	}
	return b
}

func (wl *crashWorkload) place(rel string, id uint32) {
	wl.ids[rel] = id
	if wl.everAt[rel] == nil {
		wl.everAt[rel] = map[uint32]bool{}
	}
	wl.everAt[rel][id] = true
}

func (wl *crashWorkload) paths() []string {
	var ps []string
	for p := range wl.data {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

func (wl *crashWorkload) must(err error) {
	wl.t.Helper()
	if err != nil {
		wl.t.Fatal(err)
	}
}

// write writes a stamped range of rel (16-aligned), fsyncing it sometimes.
func (wl *crashWorkload) write(rel string, off int64, n int, create bool) {
	off, n = off/16*16, (n+15)/16*16
	flags := os.O_WRONLY
	if create {
		flags |= os.O_CREATE | os.O_EXCL
		wl.place(rel, wl.next)
		wl.next++
	}
	f, err := os.OpenFile(filepath.Join(wl.root, rel), flags, 0o644)
	wl.must(err)
	wl.writes++
	p := crashStamp(wl.ids[rel], wl.writes, off, n)
	_, err = f.WriteAt(p, off)
	wl.must(err)
	if wl.rng.Intn(3) == 0 {
		wl.must(f.Sync())
	}
	wl.must(f.Close())
	d := wl.data[rel]
	if end := int(off) + n; end > len(d) {
		d = append(d, make([]byte, end-len(d))...)
	}
	copy(d[off:], p)
	wl.data[rel] = d
}

func (wl *crashWorkload) run(ops int) {
	wl.must(os.Mkdir(filepath.Join(wl.root, "d"), 0o755))
	for i := 0; i < ops; i++ {
		ps := wl.paths()
		switch r := wl.rng.Intn(100); {
		case r < 30 || len(ps) == 0:
			rel := fmt.Sprintf("f%d", i)
			if wl.rng.Intn(2) == 0 {
				rel = "d/" + rel
			}
			wl.write(rel, int64(wl.rng.Intn(8192)), 16+wl.rng.Intn(160<<10), true)
		case r < 50:
			rel := ps[wl.rng.Intn(len(ps))]
			wl.write(rel, int64(wl.rng.Intn(len(wl.data[rel])+4096)), 16+wl.rng.Intn(64<<10), false)
		case r < 58:
			rel := ps[wl.rng.Intn(len(ps))]
			size := wl.rng.Intn(len(wl.data[rel])+1) / 16 * 16
			wl.must(os.Truncate(filepath.Join(wl.root, rel), int64(size)))
			wl.data[rel] = wl.data[rel][:size]
		case r < 70:
			rel := ps[wl.rng.Intn(len(ps))]
			wl.must(os.Remove(filepath.Join(wl.root, rel)))
			delete(wl.data, rel)
			delete(wl.ids, rel)
		case r < 78:
			from, to := ps[wl.rng.Intn(len(ps))], ps[wl.rng.Intn(len(ps))]
			if from == to {
				continue
			}
			wl.must(os.Rename(filepath.Join(wl.root, from), filepath.Join(wl.root, to)))
			wl.data[to], wl.ids[to] = wl.data[from], wl.ids[from]
			wl.place(to, wl.ids[from])
			delete(wl.data, from)
			delete(wl.ids, from)
		case r < 84:
			// Many entries, then none: the log grows into new extensions.
			dir := filepath.Join(wl.root, fmt.Sprintf("burst%d", i))
			wl.must(os.Mkdir(dir, 0o755))
			for k := 0; k < 400; k++ {
				wl.must(os.WriteFile(filepath.Join(dir, fmt.Sprintf("e%d", k)), nil, 0o644))
			}
			wl.must(os.RemoveAll(dir))
		case r < 90:
			rel := ps[wl.rng.Intn(len(ps))]
			v := make([]byte, 8<<10+wl.rng.Intn(24<<10))
			wl.rng.Read(v)
			wl.must(xattr.Set(filepath.Join(wl.root, rel), "user.big", v))
		case r < 95:
			fd, err := unix.Open(wl.root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			wl.must(err)
			wl.must(unix.Syncfs(fd))
			unix.Close(fd)
		default:
			time.Sleep(time.Duration(wl.rng.Intn(2500)) * time.Millisecond) // let the daemon's flusher run
		}
	}
}

// checkState checks one crash image with the binary.
func (wl *crashWorkload) checkState(img, where string, mount bool) {
	t := wl.t
	t.Helper()
	if res := runTool(t, time.Minute, "fsck", img); res.Err != nil {
		t.Fatalf("%s: fsck: %s", where, res)
	}
	dest := filepath.Join(t.TempDir(), "out")
	if res := runTool(t, time.Minute, "get", img, "/", dest); res.Err != nil {
		t.Fatalf("%s: get: %s", where, res)
	}
	wl.scan(dest, where)
	if mount {
		m := mountImage(t, img, "ro")
		wl.scan(m.Path(), where+", read through a read-only mount")
		m.Unmount()
	}
}

// scan checks every regular file under dir: each 16-byte chunk is zeros,
// or a stamp of a file once at that path, at its own offset.
func (wl *crashWorkload) scan(dir, where string) {
	t := wl.t
	t.Helper()
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.HasPrefix(rel, "burst") {
			if len(b) != 0 {
				return fmt.Errorf("%s: empty burst file %s has %d bytes", where, rel, len(b))
			}
			return nil
		}
		for i := 0; i+16 <= len(b); i += 16 {
			c := b[i : i+16]
			if bytes.Equal(c, make([]byte, 16)) {
				continue
			}
			id := binary.LittleEndian.Uint32(c[2:])
			off := uint64(binary.LittleEndian.Uint32(c[10:])) | uint64(binary.LittleEndian.Uint16(c[14:]))<<32
			if binary.LittleEndian.Uint16(c) != 0x5354 || !wl.everAt[rel][id] || off*16 != uint64(i) {
				return fmt.Errorf("%s: %s holds bytes that are not its own at offset %d: % x", where, rel, i, c)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkFinal checks that the image holds exactly what the workload left.
func (wl *crashWorkload) checkFinal(img string) {
	t := wl.t
	dest := filepath.Join(t.TempDir(), "final")
	if res := runTool(t, time.Minute, "get", img, "/", dest); res.Err != nil {
		t.Fatalf("final state: get: %s", res)
	}
	for rel, want := range wl.data {
		got, err := os.ReadFile(filepath.Join(dest, rel))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("final state: %s: %d bytes, want %d (%v)", rel, len(got), len(want), err)
		}
	}
}
