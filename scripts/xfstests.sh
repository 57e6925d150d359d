#!/bin/bash
# xfstests.sh - run the generic xfstests list against tfsmount.
#
# Usage: XFSTESTS_DIR=/path/to/built/xfstests scripts/xfstests.sh [RESULTS_DIR] [TEST...]
#
# XFSTESTS_NBD=1 puts the test and scratch volumes behind NBD instead: two
# 2 GiB qcow2 images served by qemu-nbd on 127.0.0.1, mounted by their
# nbd:// URIs (the servers are stopped when the run ends).
#
# xfstests (kdave/xfstests) is built outside this repository and never
# committed; XFSTESTS_DIR points at the built tree. The runner
# ../shared/tools/xfstests-run.sh does the FUSE plumbing (mount helper,
# local.config, df wrapper, summary). This script supplies what is specific
# to tfsmount: the mount command, fresh 2 GiB sparse images (generic/213
# wants more than 1 GiB free), a new scratch image before every test (-M),
# the test list, and where results go.
#
# The subtype (default "tfsxfstests", XFSTESTS_SUBTYPE overrides) names the
# /sbin/mount.fuse.SUBTYPE helper the runner installs and removes again; it
# is neither "tfsmount" (the helper users and tests/ install) nor the "tfs"
# of the runner's own example, so other runs on the machine are not
# disturbed and do not disturb this one.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${TFS_SHARED:-$(cd "$repo/../shared" && pwd)}
runner=$shared/tools/xfstests-run.sh
list=${XFSTESTS_LIST:-$shared/xfstests/generic-fuse-list.txt}

: "${XFSTESTS_DIR:?set XFSTESTS_DIR to a built xfstests tree}"
[ -x "$XFSTESTS_DIR/check" ] || { echo "xfstests.sh: $XFSTESTS_DIR/check missing: build xfstests first" >&2; exit 2; }
[ -x "$runner" ] || [ -f "$runner" ] || { echo "xfstests.sh: runner $runner missing" >&2; exit 2; }

results=${1:-$repo/results/xfstests-$(date +%Y%m%d-%H%M%S)}
shift || true
mkdir -p "$results"
results=$(readlink -f "$results")

# The helper runs the command with a minimal PATH; give it the binary's
# absolute path. Build it unless TFSMOUNT_BIN names one.
bin=${TFSMOUNT_BIN:-$repo/bin/tfsmount}
if [ -z "${TFSMOUNT_BIN:-}" ]; then
	(cd "$repo" && go build -o "$bin" ./cmd/tfsmount)
fi
bin=$(readlink -f "$bin")

test_img=$results/tfs-test.img
scratch_img=$results/tfs-scratch.img

selection=(-l "$list")
if [ $# -gt 0 ]; then
	selection=("$@")
fi

mkfs="rm -f {dev}; '$bin' mkfs --size 2G {dev}"
test_dev=$test_img scratch_dev=$scratch_img
if [ "${XFSTESTS_NBD:-0}" = 1 ]; then
	servers=()
	trap 'kill "${servers[@]}" 2>/dev/null || true' EXIT
	port=${XFSTESTS_NBD_PORT:-10871}
	for vol in test scratch; do
		qemu-img create -q -f qcow2 "$results/tfs-$vol.qcow2" 2G
		qemu-nbd --persistent --shared=16 -b 127.0.0.1 -p "$port" -f qcow2 -x "$vol" "$results/tfs-$vol.qcow2" &
		servers+=($!)
		eval "${vol}_dev=nbd://127.0.0.1:$port/$vol"
		port=$((port + 1))
	done
	sleep 1
	mkfs="'$bin' mkfs {dev}"
fi

echo "xfstests.sh: tfsmount=$bin xfstests=$XFSTESTS_DIR results=$results test=$test_dev scratch=$scratch_dev"
bash "$runner" -s "${XFSTESTS_SUBTYPE:-tfsxfstests}" -x "$XFSTESTS_DIR" \
	-c "exec '$bin' -f \"\$SRC\" \"\$MNT\" \${OPTS:+-o \"\$OPTS\"}" \
	-m "$mkfs" -M \
	-T "$test_dev" -S "$scratch_dev" \
	-r "$results" "${selection[@]}"
