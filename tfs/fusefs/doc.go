// Package fusefs owns the FUSE presentation of a TFS volume: go-fuse node and
// file-handle types that turn kernel requests into tfs.FS calls, the
// synthesis of owner, mode and link counts that TFS does not store, the
// mapping of tfs errors to errno values, and the kernel cache policy
// (entry and attribute timeouts, page cache kept across opens).
//
// Within the module it may import only lower layers (scripts/layers.sh
// checks the ranks); it uses tfs, tfs/format, pagecache and heap, and
// outside the module go-fuse and golang.org/x/sys/unix. Every method here
// runs in a FUSE thread (syscall context) and may block on tfs; none holds a
// lock of this package while calling tfs or while sending a kernel
// notification, and there is no global lock: tfs does its own locking, so
// requests on different files, and reads of one file, run in parallel.
//
// Presentation decisions (README.md, "Compatibility with Nanos"; the flags
// are in docs/format.md, "Flags"):
//   - Owner is Config.UID/GID. Directories are 0777&^umask, regular files
//     0666&^umask plus 0111&^umask when the file carries TFS's exec flag,
//     minus write bits when it carries readonly; symlinks 0777; sockets
//     0444&^umask.
//   - chmod of a regular file stores what TFS can: any x bit sets the exec
//     flag, no w bit sets readonly (tfs.FS.SetFlags); create and mknod apply
//     the same rule to the new file's mode. Otherwise chmod/chown
//     succeed only when they leave what stat shows (EPERM otherwise) unless
//     Config.IgnoreChmod; no mode bits or owners are persisted.
//   - st_nlink: files and symlinks show the link count, directories
//     2 + number of subdirectories. ctime is mtime, or the time of a later
//     change that leaves mtime alone (kept in memory only, ctime.go).
//   - Only the user.* xattr namespace is served; others give EOPNOTSUPP.
package fusefs
