// Package tests owns the end-to-end layer: tests that build (or take, from
// TFSMOUNT_BIN) the real tfsmount binary, mount images with FUSE for real and
// check what user programs see through the mount, what the offline commands
// print, and that every image a test wrote passes `tfsmount fsck` afterwards.
//
// Nothing here is skipped for a missing /dev/fuse, fusermount3 or fixture
// directory: the machine these run on has all of them, so their absence is a
// failure of the environment that must be visible.
package tests
