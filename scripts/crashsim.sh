#!/bin/bash
# crashsim.sh - the long run of the crash simulator (tfs/crashsim_test.go).
#
# Usage: scripts/crashsim.sh [SEEDS [STATES]]
#   SEEDS   workloads to run, each with its own seed (default 5)
#   STATES  crash states to build and check in all (default 5000)
#
# Each workload runs to completion on a device that records every write and
# flush (the memory device, and the io_uring and thread-pool engines on an
# image file in turn); then the images a power cut could have left are
# rebuilt and checked: fsck, a read-only mount, every fsync'd file, and
# every file's bytes being its own or zeros. It prints the totals and exits
# non-zero on any failure, with the seed and the crash point in the
# message. make test runs a short version of the same test (TestCrashSim).
# CRASHSIM_NORULES=1 runs it with the ordering rules off (what tfsmount did
# before them), to show what they prevent; that run reports, never fails.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-5}
states=${2:-5000}
export PATH=/usr/local/go/bin:$PATH
norules=
[ "${CRASHSIM_NORULES:-0}" = 1 ] && norules=-crashsim.norules
exec go test -count=1 -timeout 120m -run '^TestCrashSimLong$' -v ./tfs \
	-crashsim.seeds="$seeds" -crashsim.states="$states" $norules
