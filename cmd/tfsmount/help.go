package main

const usageText = `Usage:
  tfsmount [-f] [-o OPTIONS] IMAGE|DEVICE MOUNTPOINT
  tfsmount mkfs [--label L] [--size N] [--from DIR] IMAGE [SIZE]
  tfsmount fsck [--partition P] IMAGE
  tfsmount compact [--partition P] IMAGE
  tfsmount ls [-l] [-R] IMAGE [PATH]
  tfsmount cat IMAGE PATH
  tfsmount get IMAGE PATH DEST
  tfsmount put IMAGE SRC PATH
  tfsmount version
  tfsmount help [COMMAND]

Mounts a TFS volume (the filesystem of the Nanos unikernel) through FUSE,
read-write, or works on an image without mounting it. Unmount with
'umount MOUNTPOINT' or 'fusermount3 -u MOUNTPOINT'.

Everywhere, IMAGE may also be an NBD export, written as an NBD URI:
nbd://HOST[:PORT]/EXPORT, nbds://... (TLS), nbd+unix:///EXPORT?socket=PATH.

Run 'tfsmount help mount' for the mount options, 'tfsmount COMMAND --help'
for a command.
`

var commandHelp = map[string]string{
	"mount":   mountHelp,
	"mkfs":    mkfsHelp,
	"fsck":    fsckHelp,
	"compact": compactHelp,
	"ls":      lsHelp,
	"cat":     catHelp,
	"get":     getHelp,
	"put":     putHelp,
}

const mountHelp = `Usage: tfsmount [-f] [-o OPTIONS] IMAGE|DEVICE MOUNTPOINT

Mounts the TFS volume in IMAGE (a file or block device; raw or with an MBR
partition table as Nanos images have; or an NBD export given by its URI,
nbd://HOST[:PORT]/EXPORT, nbds://HOST/EXPORT?tls-certificates=DIR or
nbd+unix:///EXPORT?socket=PATH) on MOUNTPOINT. Returns when the mount
is ready and leaves a daemon serving it; the daemon writes everything to
the image and exits after 'umount MOUNTPOINT'. The image is locked: a second
mount of it is refused.

  -f            stay in the foreground (SIGINT/SIGTERM unmount cleanly)
  -o OPTIONS    comma-separated mount options:
     ro, rw            read-only / read-write (default rw)
     uid=N, gid=N      owner shown for all files (default: the mounting user)
     umask=OOO         mode bits removed (default 022): directories show
                       0777&^umask, files 0666&^umask (plus x bits for files
                       TFS marks exec; no w bits for files marked readonly)
     allow_other       let other users use the mount; turns on
                       default_permissions, so the owner and modes shown
                       are what the kernel enforces
     default_permissions  the kernel checks the shown owner and modes (on
                       with allow_other)
     no_default_permissions  with allow_other: nothing is checked, every
                       user can read and change everything (a warning says so)
     strict_chmod      chmod/chown asking for what TFS cannot store (modes
                       other than its exec and readonly flags, other owners)
                       fail with EPERM; by default they succeed and store
                       the flags (what cp -a and rsync -a need)
     ignore_chmod      the default, the opposite of strict_chmod
     writeback_cache   the kernel keeps written data in its page cache and
                       sends it in large batches (FUSE writeback cache)
     cache_size=N      page cache budget in bytes (K, M, G suffixes; default 256M)
     io=auto|uring|sync  device I/O engine (default auto: io_uring if it works)
     fuse_uring=auto|on|off  take FUSE requests over io_uring (default auto:
                       where the kernel allows it, that is as root with
                       /sys/module/fuse/parameters/enable_uring set to Y;
                       default off, or $TFSMOUNT_FUSE_URING)
     nbd_timeout=SECONDS  how long a lost NBD connection is retried before
                       requests fail with EIO (default 60)
     partition=root|boot|OFFSET  which volume of a partitioned image
                       (default root); OFFSET is a byte offset
     fsname=NAME       mount source shown by df/findmnt (default: IMAGE as given)
     debug             log every FUSE request (use with -f)
     stats             log cache and device statistics at unmount; SIGUSR1
                       logs them at any time
     log=FILE          append the daemon's messages to FILE (default: syslog,
                       or stderr with -f)
  mount(8) options such as defaults, noatime, nodev, nosuid, noexec, _netdev,
  nofail, context=... are accepted and ignored; unknown options give a warning.

Exit status (as mount(8)): 0 mounted, 1 bad usage, 32 mount failed.

As a mount(8) helper:
  ln -s "$(command -v tfsmount)" /sbin/mount.fuse.tfsmount
  mount -t fuse.tfsmount IMAGE MOUNTPOINT -o uid=1000
/etc/fstab:
  /srv/vm.img  /mnt/vm  fuse.tfsmount  defaults,allow_other,uid=1000,gid=1000  0 0
`

const mkfsHelp = `Usage: tfsmount mkfs [--label L] [--size N] [--from DIR] IMAGE [SIZE]

Writes an empty TFS volume over IMAGE (a file or a block device). A file is
created if missing, with --size (default 64M), or grown to --size.
  --label L    volume label (at most 31 bytes)
  --size N     image size in bytes, with K, M, G or T suffix; SIZE after
               IMAGE is the same ('tfsmount mkfs vm.img 1G')
  --from DIR   copy the tree under DIR into the new volume: files,
               directories, symlinks and modification times
Exit status: 0 done, 1 bad usage, 2 failed.
`

const fsckHelp = `Usage: tfsmount fsck [--repair] [--partition P] IMAGE

Checks the TFS volume in IMAGE and prints every problem found: log
structure, dictionary references, extents inside the volume and not
overlapping, directory entries, link counts. Without --repair nothing is
changed.
  --repair        fix what a crash or damage left, printing each change: a
                  log that cannot be read to its end is ended before the
                  first unreadable record; malformed entries are renamed
                  (bad names) or removed; extents outside the volume or
                  overlapping others are dropped; link counts are set; then
                  the log is rewritten from what is kept (inode numbers
                  change, as after 'tfsmount compact')
  --partition P   root (default), boot, or a byte offset
Exit status (as fsck(8)): 0 clean, 1 problems fixed (now clean), 4 problems
left, 8 could not check, 16 bad usage.
`

const lsHelp = `Usage: tfsmount ls [-l] [-R] [--partition P] IMAGE [PATH]

Lists PATH (default /) in the volume without mounting it.
  -l   long listing: type, size, modification time, link target
  -R   recurse into directories
`

const catHelp = `Usage: tfsmount cat [--partition P] IMAGE PATH

Writes the file PATH of the volume to standard output.
`

const getHelp = `Usage: tfsmount get [--partition P] IMAGE PATH DEST

Copies PATH out of the volume like 'cp -a': if DEST does not exist it
becomes the copy; if DEST is a directory the copy goes inside it.
'tfsmount get IMAGE / DEST' extracts the whole volume. Directories are
copied recursively with their modification times; symlinks stay symlinks.
`

const putHelp = `Usage: tfsmount put [--partition P] IMAGE SRC PATH

Copies the host file or tree SRC into the volume like 'cp -a': if PATH does
not exist it becomes the copy; if PATH is a directory the copy goes inside
it. Files, directories, symlinks and modification times are copied.
`
