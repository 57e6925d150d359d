package tests

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// modelFS is the in-memory truth the random-operation test checks the mount
// against: names map to inodes, inodes hold contents, and open descriptors
// refer to inodes (so an unlinked or renamed file keeps its data for them).
type modelFS struct {
	names map[string]int    // name in the root dir -> inode
	data  map[int][]byte    // inode -> content
	fds   map[int]int       // real fd -> inode
	ino   int               // last inode number handed out
	paths map[string]string // name -> full path on the mount
	hist  map[int][]string  // inode -> the operations that changed it, for failure messages
}

// note records an operation on an inode; a data mismatch prints the
// inode's history so the failing sequence can be replayed by hand.
func (md *modelFS) note(ino, op int, format string, args ...any) {
	h := append(md.hist[ino], fmt.Sprintf("op %d: ", op)+fmt.Sprintf(format, args...))
	if len(h) > 40 {
		h = h[len(h)-40:]
	}
	md.hist[ino] = h
}

func (md *modelFS) history(fd int) string {
	return "\n\t" + strings.Join(md.hist[md.fds[fd]], "\n\t")
}

const (
	modelFiles   = 6       // names f0..f5
	modelMaxOff  = 1 << 20 // writes start below this
	modelMaxLen  = 96 << 10
	modelMaxOpen = 8
)

// TestRandomOpsModel runs several thousand seeded random operations on the
// mount (io=uring, io=sync, and io=uring with the kernel's writeback cache)
// and checks each result against modelFS. TFS_MODEL_SEED replays a run;
// the seed is printed on failure.
func TestRandomOpsModel(t *testing.T) {
	for _, opts := range []string{"io=uring", "io=sync", "io=uring,writeback_cache", "io=uring,fuse_uring=on"} {
		t.Run(opts, func(t *testing.T) {
			if strings.Contains(opts, "fuse_uring=on") {
				setFuseURing(t, true)
			}
			seeds := []int64{time.Now().UnixNano(), time.Now().UnixNano() + 1, time.Now().UnixNano() + 2}
			if s := os.Getenv("TFS_MODEL_SEED"); s != "" {
				seed, _ := strconv.ParseInt(s, 10, 64)
				seeds = []int64{seed}
			}
			for _, seed := range seeds {
				t.Run(fmt.Sprint(seed), func(t *testing.T) {
					t.Cleanup(func() {
						if t.Failed() {
							t.Logf("replay with TFS_MODEL_SEED=%d", seed)
						}
					})
					m := freshMount(t, "128M", opts)
					m = runModel(t, m, seed, 5000)
					m.finish()
				})
			}
		})
	}
}

// runModel runs nops operations, checks the whole tree against the model,
// remounts, checks again and returns the new mount.
func runModel(t *testing.T, m *mount, seed int64, nops int) *mount {
	r := rand.New(rand.NewSource(seed))
	md := &modelFS{names: map[string]int{}, data: map[int][]byte{}, fds: map[int]int{}, paths: map[string]string{}, hist: map[int][]string{}}
	for i := 0; i < modelFiles; i++ {
		name := fmt.Sprintf("f%d", i)
		md.paths[name] = m.Path(name)
	}
	// On a failure the fds must be closed before the mount's cleanup, or
	// the unmount is busy and the daemon cannot exit.
	t.Cleanup(func() {
		for fd := range md.fds {
			unix.Close(fd)
		}
	})
	// A mismatch is reported, and the run goes on, so one bug does not hide
	// the next: the first few of each kind (the message's first word) are
	// printed, and the run stops only when mismatches pile up.
	failures := 0
	perKind := map[string]int{}
	fail := func(op int, format string, args ...any) {
		t.Helper()
		failures++
		kind, _, _ := strings.Cut(format, " ")
		perKind[kind]++
		if perKind[kind] <= 3 {
			t.Errorf("seed %d op %d: %s", seed, op, fmt.Sprintf(format, args...))
		} else if perKind[kind] == 4 {
			t.Errorf("seed %d: more %q mismatches follow, not printed", seed, kind)
		}
		if failures > 300 {
			t.Fatalf("seed %d: %d mismatches, stopping", seed, failures)
		}
	}
	anyFd := func() (int, bool) {
		if len(md.fds) == 0 {
			return 0, false
		}
		// Map order is random per process; pick by sorted index for replay.
		keys := make([]int, 0, len(md.fds))
		for fd := range md.fds {
			keys = append(keys, fd)
		}
		sort.Ints(keys)
		return keys[r.Intn(len(keys))], true
	}
	name := func() string { return fmt.Sprintf("f%d", r.Intn(modelFiles)) }
	for op := 0; op < nops; op++ {
		switch k := r.Intn(110); {
		case k < 12: // open, creating if absent
			if len(md.fds) >= modelMaxOpen {
				continue
			}
			n := name()
			fd, err := unix.Open(md.paths[n], unix.O_RDWR|unix.O_CREAT, 0o644)
			if err != nil {
				fail(op, "open %s: %v", n, err)
				continue
			}
			ino, ok := md.names[n]
			if !ok {
				md.ino++
				ino = md.ino
				md.names[n] = ino
				md.data[ino] = nil
			}
			md.fds[fd] = ino
			md.note(ino, op, "open %s as fd %d", n, fd)
		case k < 18: // close
			if fd, ok := anyFd(); ok {
				if err := unix.Close(fd); err != nil {
					fail(op, "close %s: %v", md.desc(fd), err)
				}
				md.note(md.fds[fd], op, "close fd %d", fd)
				delete(md.fds, fd)
			}
		case k < 40: // pwrite
			fd, ok := anyFd()
			if !ok {
				continue
			}
			off := int64(r.Intn(modelMaxOff))
			if r.Intn(3) == 0 {
				off &^= 4095
			}
			buf := make([]byte, 1+r.Intn(modelMaxLen))
			r.Read(buf)
			n, err := unix.Pwrite(fd, buf, off)
			if err != nil || n != len(buf) {
				fail(op, "pwrite %d at %d on %s: %d, %v", len(buf), off, md.desc(fd), n, err)
				continue
			}
			ino := md.fds[fd]
			md.data[ino] = writeAt(md.data[ino], buf, off)
			md.note(ino, op, "pwrite fd %d %d bytes at %d", fd, len(buf), off)
		case k < 60: // pread, checked
			fd, ok := anyFd()
			if !ok {
				continue
			}
			content := md.data[md.fds[fd]]
			off := int64(r.Intn(len(content) + 4096))
			buf := make([]byte, 1+r.Intn(modelMaxLen))
			n, err := unix.Pread(fd, buf, off)
			if err != nil {
				fail(op, "pread %d at %d on %s: %v", len(buf), off, md.desc(fd), err)
				continue
			}
			want := []byte{}
			if off < int64(len(content)) {
				want = content[off:min(int64(len(content)), off+int64(len(buf)))]
			}
			if !bytes.Equal(buf[:n], want) {
				fail(op, "pread %d at %d on %s: got %d bytes, want %d, first difference at %d; history:%s",
					len(buf), off, md.desc(fd), n, len(want), firstDiff(buf[:n], want), md.history(fd))
			}
		case k < 67: // ftruncate
			fd, ok := anyFd()
			if !ok {
				continue
			}
			size := int64(r.Intn(modelMaxOff + modelMaxLen))
			if r.Intn(3) == 0 {
				size = 0
			}
			if err := unix.Ftruncate(fd, size); err != nil {
				fail(op, "ftruncate %d on %s: %v", size, md.desc(fd), err)
				continue
			}
			ino := md.fds[fd]
			md.data[ino] = resize(md.data[ino], size)
			md.note(ino, op, "ftruncate fd %d to %d", fd, size)
		case k < 73: // fallocate: keep-size preallocation, punch hole, zero range
			fd, ok := anyFd()
			if !ok {
				continue
			}
			ino := md.fds[fd]
			off := int64(r.Intn(modelMaxOff))
			length := int64(1 + r.Intn(256<<10))
			mode := []uint32{unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_KEEP_SIZE | unix.FALLOC_FL_PUNCH_HOLE,
				unix.FALLOC_FL_ZERO_RANGE, unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE}[r.Intn(4)]
			if err := unix.Fallocate(fd, mode, off, length); err != nil {
				fail(op, "fallocate mode %#x %d+%d on %s: %v", mode, off, length, md.desc(fd), err)
				continue
			}
			md.note(ino, op, "fallocate fd %d mode %#x %d+%d", fd, mode, off, length)
			if mode&unix.FALLOC_FL_KEEP_SIZE == 0 && off+length > int64(len(md.data[ino])) {
				md.data[ino] = resize(md.data[ino], off+length)
			}
			if mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) != 0 {
				d := md.data[ino]
				for i := off; i < off+length && i < int64(len(d)); i++ {
					d[i] = 0
				}
			}
		case k < 80: // rename (plain, may replace)
			a, b := name(), name()
			err := unix.Rename(md.paths[a], md.paths[b])
			ino, ok := md.names[a]
			switch {
			case !ok:
				if errnoOf(err) != unix.ENOENT {
					fail(op, "rename of missing %s -> %s: %v, want ENOENT", a, b, err)
				}
			case err != nil:
				fail(op, "rename %s -> %s: %v", a, b, err)
			case a != b:
				md.note(ino, op, "rename %s -> %s", a, b)
				if old, ok := md.names[b]; ok {
					md.note(old, op, "replaced by rename %s -> %s", a, b)
				}
				md.dropName(b)
				delete(md.names, a)
				md.names[b] = ino
			}
		case k < 85: // unlink
			n := name()
			err := unix.Unlink(md.paths[n])
			if _, ok := md.names[n]; !ok {
				if errnoOf(err) != unix.ENOENT {
					fail(op, "unlink of missing %s: %v, want ENOENT", n, err)
				}
			} else if err != nil {
				fail(op, "unlink %s: %v", n, err)
			} else {
				md.note(md.names[n], op, "unlink %s", n)
				md.dropName(n)
			}
		case k < 92: // write and read through a shared mapping
			fd, ok := anyFd()
			if !ok {
				continue
			}
			ino := md.fds[fd]
			size := len(md.data[ino])
			if size == 0 {
				continue
			}
			// Touching a mapping past the real EOF would kill the test
			// binary with SIGBUS, so the size is checked first.
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil || st.Size != int64(size) {
				fail(op, "fstat of %s: size %d, %v", md.desc(fd), st.Size, err)
				continue
			}
			mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				fail(op, "mmap %d bytes of %s: %v", size, md.desc(fd), err)
				continue
			}
			if !bytes.Equal(mem, md.data[ino]) {
				fail(op, "mmap of %s shows different content (first difference at %d); history:%s", md.desc(fd), firstDiff(mem, md.data[ino]), md.history(fd))
			}
			off := r.Intn(size)
			patch := make([]byte, min(size-off, 1+r.Intn(8192)))
			r.Read(patch)
			copy(mem[off:], patch)
			copy(md.data[ino][off:], patch)
			md.note(ino, op, "mmap fd %d, %d bytes written at %d, msync", fd, len(patch), off)
			if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
				fail(op, "msync of %s: %v", md.desc(fd), err)
			}
			unix.Munmap(mem)
		case k < 96: // stat size
			n := name()
			var st unix.Stat_t
			err := unix.Stat(md.paths[n], &st)
			ino, ok := md.names[n]
			if !ok {
				if errnoOf(err) != unix.ENOENT {
					fail(op, "stat of missing %s: %v", n, err)
				}
			} else if err != nil || st.Size != int64(len(md.data[ino])) {
				fail(op, "stat %s: size %d, %v; want %d", n, st.Size, err, len(md.data[ino]))
			}
		case k < 100: // fsync or fdatasync
			if fd, ok := anyFd(); ok {
				var err error
				if r.Intn(2) == 0 {
					err = unix.Fsync(fd)
				} else {
					err = unix.Fdatasync(fd)
				}
				if err != nil {
					fail(op, "fsync of %s: %v", md.desc(fd), err)
				}
			}
		case k < 105: // copy_file_range between two different inodes
			in, ok1 := anyFd()
			out, ok2 := anyFd()
			if !ok1 || !ok2 || md.fds[in] == md.fds[out] {
				continue
			}
			src := md.data[md.fds[in]]
			offIn := int64(r.Intn(len(src) + 1))
			offOut := int64(r.Intn(modelMaxOff))
			length := 1 + r.Intn(modelMaxLen)
			oi, oo := offIn, offOut
			n, err := unix.CopyFileRange(in, &oi, out, &oo, length, 0)
			wantN := min(int64(length), int64(len(src))-offIn)
			if err != nil || int64(n) > wantN || (wantN > 0 && n == 0) {
				fail(op, "copy_file_range %d bytes from %s at %d to %s at %d: %d, %v; want up to %d",
					length, md.desc(in), offIn, md.desc(out), offOut, n, err, wantN)
				continue
			}
			if n == 0 {
				continue // nothing copied: the target does not grow
			}
			ino := md.fds[out]
			md.data[ino] = writeAt(md.data[ino], append([]byte(nil), src[offIn:offIn+int64(n)]...), offOut)
			md.note(ino, op, "copy_file_range %d bytes from fd %d at %d to fd %d at %d", n, in, offIn, out, offOut)
		default: // write through a fresh O_APPEND descriptor
			n := name()
			ino, ok := md.names[n]
			if !ok {
				continue
			}
			fd, err := unix.Open(md.paths[n], unix.O_WRONLY|unix.O_APPEND, 0)
			if err != nil {
				fail(op, "open %s O_APPEND: %v", n, err)
				continue
			}
			buf := make([]byte, 1+r.Intn(20000))
			r.Read(buf)
			k, err := unix.Write(fd, buf)
			unix.Close(fd)
			if err != nil || k != len(buf) {
				fail(op, "append %d bytes to %s: %d, %v", len(buf), n, k, err)
				continue
			}
			md.data[ino] = writeAt(md.data[ino], buf, int64(len(md.data[ino])))
			md.note(ino, op, "append %d bytes via %s", len(buf), n)
		}
	}
	for fd := range md.fds {
		unix.Close(fd)
	}
	md.fds = map[int]int{}
	md.checkAll(t, m, seed, "after the run")
	m2 := m.remount()
	for n := range md.paths {
		md.paths[n] = m2.Path(n)
	}
	md.checkAll(t, m2, seed, "after remount")
	return m2
}

// desc describes what the model knows about an fd, for failure messages.
func (md *modelFS) desc(fd int) string {
	ino := md.fds[fd]
	var names []string
	for n, i := range md.names {
		if i == ino {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	where := "unlinked"
	if len(names) > 0 {
		where = "named " + strings.Join(names, ",")
	}
	return fmt.Sprintf("fd %d (inode %d, %s, size %d)", fd, ino, where, len(md.data[ino]))
}

// dropName removes a name; the inode's data stays only while an fd has it.
func (md *modelFS) dropName(n string) {
	ino, ok := md.names[n]
	if !ok {
		return
	}
	delete(md.names, n)
	for _, i := range md.fds {
		if i == ino {
			return
		}
	}
	delete(md.data, ino)
}

// checkAll compares every name's existence and full content with the model.
func (md *modelFS) checkAll(t *testing.T, m *mount, seed int64, when string) {
	t.Helper()
	for n, p := range md.paths {
		got, err := os.ReadFile(p)
		ino, ok := md.names[n]
		if !ok {
			if !os.IsNotExist(err) {
				t.Errorf("seed %d %s: %s exists (%v) but the model has no such name", seed, when, n, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("seed %d %s: read %s: %v", seed, when, n, err)
			continue
		}
		if want := md.data[ino]; !bytes.Equal(got, want) {
			t.Errorf("seed %d %s: %s has %d bytes, model %d, first difference at %d", seed, when, n, len(got), len(want), firstDiff(got, want))
		}
	}
}

func writeAt(d, p []byte, off int64) []byte {
	if end := off + int64(len(p)); end > int64(len(d)) {
		d = resize(d, end)
	}
	copy(d[off:], p)
	return d
}

func resize(d []byte, size int64) []byte {
	if size <= int64(len(d)) {
		return d[:size:size]
	}
	n := make([]byte, size)
	copy(n, d)
	return n
}
