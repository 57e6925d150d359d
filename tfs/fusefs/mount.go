package fusefs

import (
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tfsmount/tfsmount/pagecache"
	"github.com/tfsmount/tfsmount/tfs"
)

// Config is how a volume is presented.
type Config struct {
	UID, GID uint32 // owner shown for every node
	Umask    uint32 // permission bits removed from the synthesized modes
	// IgnoreChmod makes chmod and chown succeed without effect even when
	// they ask for something TFS cannot store (for cp -p, rsync -a).
	IgnoreChmod bool
	// AttrTimeout and EntryTimeout are how long the kernel may trust
	// attributes and names without asking again. Every change goes
	// through this mount (the image is locked), so the kernel's own
	// invalidation keeps them right; zero means one second.
	AttrTimeout, EntryTimeout time.Duration
	// NoOpen serves files without OPEN, FLUSH and RELEASE requests
	// (noopen.go). Set it only where the kernel enforces the modes shown
	// (default_permissions) or only root can enter, because the readonly
	// check that Open makes for other callers is then not made.
	NoOpen bool
	// Logf receives problems that the kernel only sees as EIO. Nil: discard.
	Logf func(format string, args ...any)
}

// MountOptions are the FUSE-level settings of a mount.
type MountOptions struct {
	FsName       string   // the mount source shown by df/findmnt: the IMAGE argument as given
	AllowOther   bool     // let users other than the mounter access the mount
	KernelOpts   []string // passed to the kernel as -o (default_permissions, ro, ...)
	Debug        bool     // log every FUSE request
	MaxReadAhead int      // 0: 1 MiB
	// Writeback lets the kernel keep written data in its page cache and
	// send it later in large batches (FUSE writeback_cache); the kernel
	// then keeps mtime and size itself and tells us with SETATTR.
	Writeback bool
	Logger    *log.Logger // go-fuse's diagnostics and debug lines (nil: standard logger)
	// URing is how requests reach the daemon: "off" (or empty) reads
	// /dev/fuse; "on" takes them over io_uring (uring.go) and fails the
	// mount where the kernel does not allow it; "auto" takes them over
	// io_uring where it can and otherwise reads /dev/fuse, saying why
	// through Logf.
	URing string
	// Logf receives the transport's messages. Nil: discard.
	Logf func(format string, args ...any)
}

// uringPayloadForTest, when set, replaces the payload size of ring entries:
// one the kernel refuses makes registering fail.
var uringPayloadForTest int

// uringEntries is how many requests each CPU's queue can hold at once over
// io_uring. The kernel queues the others until an entry is free.
const uringEntries = 16

// mount is the state every node of one mount shares. It is immutable after
// NewRoot except for the statistics counters, which are atomic.
type mount struct {
	fs  *tfs.FS
	cfg Config
	// errors counts requests answered with EIO because of an unexpected error.
	errors atomic.Int64
	limit  pagecache.LogLimiter // Burst: logBurst
	// ctimes holds in-memory change times (ctime.go).
	ctimes sync.Map
	// writeback: the kernel's writeback cache is on (set by Mount before
	// the first request).
	writeback bool
}

func (m *mount) logf(format string, args ...any) {
	m.errors.Add(1)
	if m.cfg.Logf == nil {
		return
	}
	if ok, dropped := m.limit.Allow(time.Now()); ok {
		if dropped > 0 {
			m.cfg.Logf("(%d similar messages suppressed)", dropped)
		}
		m.cfg.Logf(format, args...)
	}
}

// logBurst is how many messages a second a mount logs.
const logBurst = 20

// NewRoot returns the root node of a FUSE tree serving fsys.
func NewRoot(fsys *tfs.FS, cfg Config) fs.InodeEmbedder {
	if cfg.AttrTimeout == 0 {
		cfg.AttrTimeout = time.Second
	}
	if cfg.EntryTimeout == 0 {
		cfg.EntryTimeout = time.Second
	}
	m := &mount{fs: fsys, cfg: cfg, limit: pagecache.LogLimiter{Burst: logBurst}}
	return &node{m: m, tn: fsys.Root()}
}

// Mount serves the tree of root (from NewRoot) at dir and returns once the
// kernel has the mount. The caller runs server.Wait() and, after it
// returns, closes the tfs.FS.
//
// As root, the mount is made here with mount(2) and file system type plain
// "fuse" (no subtype: df -T says "fuse", which xfstests requires; go-fuse
// would always add one). Otherwise fusermount3 mounts it, as
// "fuse.tfsmount".
func Mount(dir string, root fs.InodeEmbedder, mo MountOptions) (*Server, error) {
	r, ok := root.(*node)
	if !ok {
		return nil, fmt.Errorf("mount %s: root %T was not made by NewRoot", dir, root)
	}
	if mo.MaxReadAhead == 0 {
		mo.MaxReadAhead = 1 << 20
	}
	opts := &fs.Options{
		EntryTimeout: &r.m.cfg.EntryTimeout,
		AttrTimeout:  &r.m.cfg.AttrTimeout,
		// Modes are synthesized here; a computed 0 (umask=0777) must stay 0.
		NullPermissions: true,
		RootStableAttr:  &fs.StableAttr{Ino: r.m.fs.Getattr(r.tn).Ino},
		// Node IDs are tfs's inode numbers, which file handles can name
		// after the kernel forgot a node, or after a remount.
		ExternalNodeID: true,
		Logger:         mo.Logger,
		MountOptions: fuse.MountOptions{
			// The source shown in /proc/self/mountinfo is the image path
			// exactly as given: findmnt -S IMAGE and umount IMAGE rely on it.
			FsName: mo.FsName,
			// The subtype fusermount3 gets; unused when mounting ourselves.
			Name:       "tfsmount",
			AllowOther: mo.AllowOther,
			Options:    mo.KernelOpts,
			// 1 MiB requests: fewer round trips for streaming I/O; tfs
			// handles any size.
			MaxWrite:     1 << 20,
			MaxReadAhead: mo.MaxReadAhead,
			// Enough requests in flight for the device queue to fill.
			MaxBackground: 64,
			// O_TRUNC arrives with OPEN instead of a separate SETATTR.
			// EXPORT_SUPPORT: open_by_handle_at and NFS export work.
			// ASYNC_DIO: an O_DIRECT reader or writer with several
			// requests in flight (libaio, io_uring) gets them all sent
			// at once, so the device queue sees them together.
			ExtraCapabilities: fuse.CAP_ATOMIC_O_TRUNC | fuse.CAP_EXPORT_SUPPORT |
				fuse.CAP_ASYNC_DIO,
			Debug:  mo.Debug,
			Logger: mo.Logger,
			// Replies come from Go buffers, never from file descriptors,
			// so splice gains nothing; and a 1 MiB read reply does not fit
			// the default maximum pipe size (go-fuse logs each fallback).
			DisableSplice: true,
			// Symlink targets never change after creation.
			EnableSymlinkCaching: true,
			// Locks are kept by the kernel for the local mount.
			EnableLocks: false,
		},
	}
	if r.m.cfg.NoOpen {
		// Without OPEN, an atomic O_TRUNC would be done by nobody: the
		// kernel then sends it as a SETATTR of size 0.
		opts.MountOptions.ExtraCapabilities &^= fuse.CAP_ATOMIC_O_TRUNC
	}
	if mo.Writeback {
		opts.MountOptions.ExtraCapabilities |= fuse.CAP_WRITEBACK_CACHE
		r.m.writeback = true
	}
	logf := mo.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	wantRing, err := wantURing(mo.URing, logf)
	if err != nil {
		return nil, fmt.Errorf("mount %s on %s: %w", mo.FsName, dir, err)
	}
	if wantRing {
		opts.MountOptions.ExtraCapabilities |= fuse.CAP_OVER_IO_URING
	}
	srv := &Server{dir: dir}
	where := dir
	devFd := -1
	if os.Geteuid() == 0 {
		devFd, err = mountKernel(dir, &opts.MountOptions)
		if err != nil {
			return nil, fmt.Errorf("mount %s on %s: %w", mo.FsName, dir, err)
		}
		// go-fuse serves an already mounted /dev/fuse descriptor given as
		// the path /dev/fd/N (and takes ownership of it).
		where = fmt.Sprintf("/dev/fd/%d", devFd)
		srv.ownMount = true
	}
	// What fs.Mount does, keeping the raw file system for the io_uring
	// transport, which serves the same tree.
	rawFS := fs.NewNodeFS(root, opts)
	server, err := fuse.NewServer(rawFS, where, &opts.MountOptions)
	if err == nil {
		go server.Serve()
		err = server.WaitMount()
	}
	if err != nil {
		if srv.ownMount {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
		return nil, fmt.Errorf("mount %s on %s: %w", mo.FsName, dir, err)
	}
	srv.Server = server
	if wantRing {
		srv.ring, err = serveURing(server, rawFS, &opts.MountOptions, devFd, logf)
		if errors.Is(err, errRegister) {
			// Requests may already be waiting for the ring, so an
			// unmount, whose last request would wait too, could hang:
			// end the connection first.
			abortConnection(dir)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
			server.Wait()
			return nil, fmt.Errorf("mount %s on %s: %w (mount with fuse_uring=off)", mo.FsName, dir, err)
		}
		if err != nil && mo.URing == "on" {
			srv.Unmount()
			server.Wait()
			return nil, fmt.Errorf("mount %s on %s: %w", mo.FsName, dir, err)
		}
		if err != nil {
			logf("tfsmount: %v; serving requests through /dev/fuse", err)
		}
	}
	if srv.ownMount {
		disablePoll(dir)
	}
	setReadAhead(dir, mo.MaxReadAhead>>10)
	return srv, nil
}

// wantURing decides from the fuse_uring setting whether to offer the
// kernel FUSE over io_uring.
func wantURing(mode string, logf func(string, ...any)) (bool, error) {
	switch mode {
	case "", "off":
		return false, nil
	case "on", "auto":
	default:
		return false, fmt.Errorf("fuse_uring=%s: want on, off or auto", mode)
	}
	why := ""
	switch {
	case os.Geteuid() != 0:
		why = "it needs the mount made by root (fusermount3 keeps /dev/fuse to itself)"
	case !URingEnabled():
		why = "the kernel has it turned off (" + URingParamPath + " is not Y)"
	}
	if why == "" {
		return true, nil
	}
	if mode == "on" {
		return false, fmt.Errorf("fuse_uring=on: FUSE over io_uring is not available: %s", why)
	}
	logf("tfsmount: FUSE over io_uring not used: %s", why)
	return false, nil
}

// serveURing starts the io_uring transport once INIT is done, if the
// kernel took the offer.
func serveURing(server *fuse.Server, rawFS fuse.RawFileSystem, mo *fuse.MountOptions, devFd int, logf func(string, ...any)) (*fuseRing, error) {
	ks := server.KernelSettings()
	if ks.Flags64()&fuse.CAP_OVER_IO_URING == 0 {
		return nil, fmt.Errorf("FUSE over io_uring not used: the kernel did not offer it in INIT")
	}
	ps := fuse.NewProtocolServer(rawFS, mo)
	// The protocol server decodes requests by the settings INIT agreed
	// on; it learns them from the same INIT the kernel sent, and its
	// reply, identical to the one already sent, goes nowhere.
	init := *ks
	init.Length, init.Opcode, init.Unique = uint32(unsafe.Sizeof(init)), 26, 1 // FUSE_INIT
	in := unsafe.Slice((*byte)(unsafe.Pointer(&init)), unsafe.Sizeof(init))
	if _, st := ps.HandleRequest([][]byte{in}, [][]byte{make([]byte, 4096)}); !st.Ok() {
		return nil, fmt.Errorf("FUSE over io_uring: INIT for the protocol server: %v", st)
	}
	payload := max(mo.MaxWrite, 1<<20) + 4096
	if uringPayloadForTest > 0 {
		payload = uringPayloadForTest
	}
	return startURing(devFd, ps, uringEntries, payload, logf)
}

// Errors returns how many requests failed with EIO for an unexpected
// reason since the mount started (each was logged).
func Errors(root fs.InodeEmbedder) int64 {
	if n, ok := root.(*node); ok {
		return n.m.errors.Load()
	}
	return 0
}
