package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// mountOptions is what -o says, after parsing. The zero value is not the
// default: use defaultMountOptions.
type mountOptions struct {
	ReadOnly           bool
	UID, GID           uint32
	Umask              uint32
	AllowOther         bool
	DefaultPermissions bool // the kernel checks modes and owners (on with allow_other unless NoDefaultPermissions)
	// NoDefaultPermissions: no_default_permissions was asked for, so
	// allow_other does not turn default_permissions on.
	NoDefaultPermissions bool
	CacheSize            int64         // pagecache budget in bytes; 0: pagecache.DefaultBudget
	IO                   string        // auto, uring or sync
	NBDTimeout           time.Duration // 0: blockdev.DefaultNBDTimeout
	FuseURing            string        // auto, on or off: FUSE requests over io_uring
	Partition            string        // root, boot or a byte offset
	FsName               string        // "": the IMAGE argument
	Debug                bool
	Stats                bool
	// IgnoreChmod (the default; strict_chmod turns it off): chmod and
	// chown asking for what TFS cannot store succeed and store what it can.
	IgnoreChmod    bool
	WritebackCache bool   // the kernel buffers writes (FUSE writeback_cache)
	LogFile        string // daemon messages go here instead of syslog
	// Remount asks to change the flags of an existing mount (mount -o
	// remount); the flags come from vfsFlags.
	Remount bool
	// Warnings lists options that were not understood; they do not fail a
	// mount (mount(8) and fstab pass options meant for others).
	Warnings []string
}

// finish derives what depends on several options; call it once every -o
// list is parsed.
func (o *mountOptions) finish() {
	if o.AllowOther && !o.NoDefaultPermissions {
		o.DefaultPermissions = true
	}
}

// openToAll reports a mount that lets every user in without the kernel
// checking the modes it shows.
func (o *mountOptions) openToAll() bool {
	return o.AllowOther && !o.DefaultPermissions
}

// openToAllWarning is printed (and logged) for such a mount.
const openToAllWarning = "allow_other with no_default_permissions: every user can read, change and delete every file, whatever owner and mode it shows"

// fuseURingDefault is fuse_uring's value when -o does not set it: off, or
// what TFSMOUNT_FUSE_URING says (auto, on or off), so that a whole test
// suite can run over the other transport without changing its commands.
func fuseURingDefault() string {
	if v := os.Getenv("TFSMOUNT_FUSE_URING"); slices.Contains(fuseURingValues, v) {
		return v
	}
	return "off"
}

var fuseURingValues = []string{"auto", "on", "off"}

// oneOf checks that the value of option key is one of choices; if it is
// not, it keeps old and says what is wanted.
func oneOf(key, val, old string, choices ...string) (string, error) {
	if slices.Contains(choices, val) {
		return val, nil
	}
	return old, fmt.Errorf("%s=%s: want %s or %s", key, val, strings.Join(choices[:len(choices)-1], ", "), choices[len(choices)-1])
}

func defaultMountOptions() mountOptions {
	return mountOptions{
		UID:         uint32(os.Getuid()),
		GID:         uint32(os.Getgid()),
		Umask:       0o022,
		IO:          "auto",
		FuseURing:   fuseURingDefault(),
		IgnoreChmod: true,
	}
}

// genericOptions are mount(8) options with no meaning for a FUSE daemon,
// or ones the kernel and fusermount already apply; they are accepted
// without a word.
var genericOptions = map[string]bool{
	"defaults": true, "noatime": true, "relatime": true, "atime": true,
	"strictatime": true, "nodiratime": true, "diratime": true,
	"nodev": true, "nosuid": true, "dev": true, "suid": true, "exec": true,
	"noexec": true, "_netdev": true, "nofail": true, "auto": true,
	"noauto": true, "user": true, "users": true, "nouser": true,
	"owner": true, "group": true, "async": true, "sync": true,
	"lazytime": true, "nolazytime": true, "silent": true, "loud": true,
}

// genericPrefixes are mount(8) options with a value that are accepted
// without a word (SELinux contexts, systemd and x-* options).
var genericPrefixes = []string{
	"context=", "fscontext=", "defcontext=", "rootcontext=",
	"x-", "comment=", "helper=", "user=", "uhelper=",
}

// parseMountOptions applies a comma-separated -o list to o. Later options
// override earlier ones (rw after ro means rw), as with mount(8).
func parseMountOptions(list string, o *mountOptions) error {
	for _, opt := range splitOptions(list) {
		key, val, hasVal := strings.Cut(opt, "=")
		var err error
		switch key {
		case "ro":
			o.ReadOnly = true
		case "rw":
			o.ReadOnly = false
		case "uid":
			o.UID, err = parseID(key, val, hasVal)
		case "gid":
			o.GID, err = parseID(key, val, hasVal)
		case "umask":
			var v uint64
			v, err = strconv.ParseUint(val, 8, 32)
			if err != nil || !hasVal || v > 0o777 {
				err = fmt.Errorf("umask=%s: want an octal mask from 0 to 777", val)
			}
			o.Umask = uint32(v)
		case "allow_other":
			o.AllowOther = true
		case "default_permissions":
			o.DefaultPermissions, o.NoDefaultPermissions = true, false
		case "no_default_permissions":
			o.DefaultPermissions, o.NoDefaultPermissions = false, true
		case "cache_size":
			o.CacheSize, err = parseSize(val)
			if err != nil || !hasVal || o.CacheSize < 1<<20 {
				err = fmt.Errorf("cache_size=%s: want a size of at least 1M (bytes, or with K, M, G suffix)", val)
			}
		case "io":
			o.IO, err = oneOf(key, val, o.IO, "auto", "uring", "sync")
		case "fuse_uring":
			o.FuseURing, err = oneOf(key, val, o.FuseURing, fuseURingValues...)
		case "nbd_timeout":
			secs, perr := strconv.ParseFloat(val, 64)
			if perr != nil || !hasVal || secs <= 0 || secs > 86400 {
				err = fmt.Errorf("nbd_timeout=%s: want seconds, more than 0 and at most 86400", val)
			}
			o.NBDTimeout = time.Duration(secs * float64(time.Second))
		case "partition":
			if val != "root" && val != "boot" {
				if n, perr := strconv.ParseInt(val, 10, 64); perr != nil || n < 0 {
					err = fmt.Errorf("partition=%s: want root, boot or a byte offset", val)
				}
			}
			o.Partition = val
		case "fsname":
			if !hasVal || val == "" {
				err = fmt.Errorf("fsname needs a value")
			}
			o.FsName = val
		case "debug":
			o.Debug = true
		case "stats":
			o.Stats = true
		case "ignore_chmod":
			o.IgnoreChmod = true
		case "strict_chmod":
			o.IgnoreChmod = false
		case "writeback_cache":
			o.WritebackCache = true
		case "no_writeback_cache":
			o.WritebackCache = false
		case "remount":
			o.Remount = true
		case "log":
			if !hasVal || val == "" {
				err = fmt.Errorf("log needs a file name")
			}
			o.LogFile = val
		default:
			if !genericOptions[opt] && !hasGenericPrefix(opt) {
				o.Warnings = append(o.Warnings, opt)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// vfsFlags maps the generic options that are mount(2) flags to the flags
// each sets and clears. Only a remount applies them (remount.go); a new
// mount is always nosuid,nodev, as FUSE mounts are.
var vfsFlags = map[string]flagChange{
	"ro":          {set: unix.MS_RDONLY},
	"rw":          {clear: unix.MS_RDONLY},
	"noexec":      {set: unix.MS_NOEXEC},
	"exec":        {clear: unix.MS_NOEXEC},
	"nosuid":      {set: unix.MS_NOSUID},
	"suid":        {clear: unix.MS_NOSUID},
	"nodev":       {set: unix.MS_NODEV},
	"dev":         {clear: unix.MS_NODEV},
	"sync":        {set: unix.MS_SYNCHRONOUS},
	"async":       {clear: unix.MS_SYNCHRONOUS},
	"noatime":     {set: unix.MS_NOATIME, clear: unix.MS_RELATIME | unix.MS_STRICTATIME},
	"relatime":    {set: unix.MS_RELATIME, clear: unix.MS_NOATIME | unix.MS_STRICTATIME},
	"strictatime": {set: unix.MS_STRICTATIME, clear: unix.MS_NOATIME | unix.MS_RELATIME},
	"nodiratime":  {set: unix.MS_NODIRATIME},
	"diratime":    {clear: unix.MS_NODIRATIME},
	"lazytime":    {set: unix.MS_LAZYTIME},
	"nolazytime":  {clear: unix.MS_LAZYTIME},
}

type flagChange struct{ set, clear uintptr }

func hasGenericPrefix(opt string) bool {
	for _, p := range genericPrefixes {
		if strings.HasPrefix(opt, p) {
			return true
		}
	}
	return false
}

// splitOptions splits at commas outside double quotes: SELinux contexts
// such as context="system_u:object_r:tmp_t:s0:c1,c2" contain commas.
func splitOptions(list string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range list {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case r == ',' && !quoted:
			if cur.Len() > 0 {
				out = append(out, cur.String())
			}
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

func parseID(key, val string, hasVal bool) (uint32, error) {
	v, err := strconv.ParseUint(val, 10, 32)
	if err != nil || !hasVal {
		return 0, fmt.Errorf("%s=%s: want a number", key, val)
	}
	return uint32(v), nil
}

// parseSize reads a byte count with an optional K, M, G or T suffix
// (powers of 1024; a trailing "B" or "iB" is allowed: 64M, 64MiB, 1G).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "i")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		case 't', 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad size %q: want bytes or a number with K, M, G or T", s)
	}
	// Not a file-size limit: no size option needs more than 2^62 bytes, and
	// the bound keeps v*mult from overflowing.
	if v > (1<<62)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return v * mult, nil
}
