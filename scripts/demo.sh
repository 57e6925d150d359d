#!/usr/bin/env bash
# The tfsmount demo (make demo): make a TFS image, mount it, copy a tree in
# and out, look at it with ls and df, unmount, check it with fsck, and read
# it back offline. Run as root on a machine with /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${TFSMOUNT_BIN:-$PWD/bin/tfsmount}
[ -x "$bin" ] || { echo "demo: $bin is missing; run 'make build' first" >&2; exit 1; }

work=$(mktemp -d /tmp/tfsmount-demo.XXXXXX)
img=$work/demo.img
mnt=$work/mnt
cleanup() {
	if mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt" || umount -l "$mnt" || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# A small tree to copy: this repository's Go sources, plus a symlink and an
# empty directory, since those are stored differently.
src=$work/src
mkdir -p "$src"
cp -r cmd tfs "$src"/
ln -s tfs/api.go "$src/api-link"
mkdir "$src/empty"

step "Make a 128 MiB TFS image"
run "$bin" mkfs --label demo --size 128M "$img"

step "Mount it (tfsmount returns once the mount is ready)"
mkdir "$mnt"
run "$bin" -o default_permissions "$img" "$mnt"
run findmnt -n -o SOURCE,TARGET,FSTYPE,OPTIONS "$mnt"

step "Copy a tree in"
run cp -a "$src" "$mnt/src"
run ls -l "$mnt" "$mnt/src"
run df -h "$mnt"

step "Copy it back out and compare"
run cp -a "$mnt/src" "$work/out"
run diff -r "$src" "$work/out"
echo "identical"

step "Unmount (the daemon writes everything to the image, then exits)"
run umount "$mnt"

step "Check the image"
run "$bin" fsck "$img"

step "Read it offline, without mounting"
run "$bin" ls -l "$img" /src
run "$bin" get "$img" /src "$work/offline"
run diff -r "$src" "$work/offline"
echo "identical"

step "Mount again read-only: the data is still there"
run "$bin" -o ro "$img" "$mnt"
run diff -r "$src" "$mnt/src"
echo "identical"
run umount "$mnt"
echo
echo "demo: all steps passed"
