#!/bin/bash
# bench.sh - measure tfsmount side by side with its peers, in one run, on one disk.
#
# Usage: scripts/bench.sh [OUT]
#   OUT  the PNG chart to write, or a directory for it (default: results/).
#        The table is printed and saved next to the chart as bench-DATE.txt.
#
# Peers (docs/performance.md): "raw" is the work file itself (fio straight
# on an image file; for metadata, a host directory), "loopback" is go-fuse's
# example/loopback over a host directory, both on the same disk as the
# tfsmount image. Everything is built here: bin/tfsmount, the loopback
# example from the go-fuse module in the module cache, scripts/metabench.
#
# Settings (environment):
#   BENCH_WORK     work directory on the disk to measure (default /var/tmp/tfsbench.PID)
#   BENCH_SIZE     bytes per sequential fio run, split over the jobs (default 512M)
#   BENCH_RUNTIME  seconds per random 4 KiB fio run (default 10)
#   BENCH_FILES    files for the metadata test (default 100000)
#   BENCH_CACHE    tfsmount cache_size for the memory test (default 256M)
#   BENCH_ONLY     space-separated subset of: fio meta mount rss sync (default all)
#   BENCH_BEFORE   another tfsmount binary (say, built from an earlier commit)
#                  to measure beside this one in the sync test, rounds
#                  interleaved: what a change to the write ordering costs
#   BENCH_SYNC_FILES  files for the create+fsync test (default 2000)
#   BENCH_KEEP=1   keep the work directory
#   TFSMOUNT_BIN   use this tfsmount binary instead of building bin/tfsmount
# Benchmarks report; they never assert a speed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
SIZE=${BENCH_SIZE:-512M}
RUNTIME=${BENCH_RUNTIME:-10}
NFILES=${BENCH_FILES:-100000}
CACHE=${BENCH_CACHE:-256M}
ONLY=${BENCH_ONLY:-fio meta mount rss sync}
SYNC_FILES=${BENCH_SYNC_FILES:-2000}
WORK=${BENCH_WORK:-/var/tmp/tfsbench.$$}
stamp=$(date +%Y%m%d-%H%M%S)

out=${1:-$repo/results}
if [ -d "$out" ] || [[ $out != *.png ]]; then
	mkdir -p "$out"
	png=$(readlink -f "$out")/bench-$stamp.png
else
	mkdir -p "$(dirname "$out")"
	png=$(readlink -f "$out")
fi
txt=${png%.png}.txt

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }
want() { [[ " $ONLY " == *" $1 "* ]]; }

[ "$(id -u)" = 0 ] || die "run as root (drop_caches, FUSE allow_other)"
for c in fio fusermount3 python3; do
	command -v $c >/dev/null || die "$c missing (make setup)"
done
if ! command -v gnuplot >/dev/null; then
	log "installing gnuplot"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null ||
		log "gnuplot could not be installed: the table is still printed"
fi

# ------------------------------------------------------------------ build
mkdir -p "$WORK"/bin
WORK=$(readlink -f "$WORK")
BIN=$WORK/bin
log "building in $BIN"
if [ -n "${TFSMOUNT_BIN:-}" ]; then
	cp "$TFSMOUNT_BIN" "$BIN/tfsmount"
else
	(cd "$repo" && go build -o bin/tfsmount ./cmd/tfsmount)
	cp "$repo/bin/tfsmount" "$BIN/tfsmount"
fi
if [ -n "${BENCH_BEFORE:-}" ]; then
	cp "$BENCH_BEFORE" "$BIN/tfsmount-before"
fi
(cd "$repo" && go mod download github.com/hanwen/go-fuse/v2 &&
	go build -o "$BIN/loopback" github.com/hanwen/go-fuse/v2/example/loopback &&
	go build -o "$BIN/metabench" ./scripts/metabench)
TFS=$BIN/tfsmount

# ------------------------------------------------------------------ mounts
# Every daemon we start is remembered by pid and mount point, so cleanup
# ends exactly those.
declare -A DAEMON_OF=()
cleanup() {
	set +e
	for mnt in "${!DAEMON_OF[@]}"; do
		fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
	done
	for pid in "${DAEMON_OF[@]}"; do
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill "$pid" 2>/dev/null
	done
	if [ "${BENCH_KEEP:-0}" != 1 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

is_mounted() { awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }

wait_mounted() { # MNT PID
	for _ in $(seq 3000); do
		is_mounted "$1" && return 0
		kill -0 "$2" 2>/dev/null || die "daemon for $1 exited before mounting"
		sleep 0.01
	done
	die "$1 not mounted after 30 s"
}

# start_tfs IMAGE MNT [OPTS [BINARY]]: foreground daemon in the background, so we know its pid.
start_tfs() {
	mkdir -p "$2"
	"${4:-$TFS}" -f -o "allow_other${3:+,$3}" "$1" "$2" >>"$WORK/tfsmount.log" 2>&1 &
	DAEMON_OF[$2]=$!
	wait_mounted "$2" $!
}

start_loop() { # BACKING MNT
	mkdir -p "$1" "$2"
	"$BIN/loopback" -q -allow-other "$2" "$1" >>"$WORK/loopback.log" 2>&1 &
	DAEMON_OF[$2]=$!
	wait_mounted "$2" $!
}

stop_mount() { # MNT: unmount and wait until the daemon has written everything and exited
	local mnt=$1 pid=${DAEMON_OF[$1]:-}
	fusermount3 -u "$mnt"
	if [ -n "$pid" ]; then
		for _ in $(seq 1800); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$pid" 2>/dev/null && die "daemon $pid for $mnt did not exit after unmount"
		wait "$pid" 2>/dev/null || true
	fi
	unset "DAEMON_OF[$mnt]"
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

bytes() { # 512M -> bytes
	python3 -c 'import sys,re
m=re.fullmatch(r"(\d+)([KMGT]?)",sys.argv[1].upper()); print(int(m[1])<<{"":0,"K":10,"M":20,"G":30,"T":40}[m[2]])' "$1"
}

RES=$WORK/results.tsv
: >"$RES"
# record METRIC UNIT HIGHER_IS_BETTER RAW TFS LOOP ("-" where a peer has no figure)
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RES"; }

# ------------------------------------------------------------------ fio
# fio_run FILE RW BS JOBS -> prints MB/s (seq) or IOPS (random)
fio_run() {
	local file=$1 rw=$2 bs=$3 jobs=$4 total per extra=()
	total=$(bytes "$SIZE")
	per=$((total / jobs / 1048576 * 1048576))
	case $rw in
	write | randwrite) extra+=(--end_fsync=1) ;;
	esac
	case $rw in
	rand*) extra+=(--time_based --runtime="$RUNTIME") ;;
	esac
	fio --name=bench --filename="$file" --rw="$rw" --bs="$bs" --numjobs="$jobs" \
		--size="$per" --offset_increment="$per" --ioengine=psync --group_reporting \
		--output-format=json "${extra[@]}" >"$WORK/fio.json" 2>>"$WORK/fio.err" ||
		{ log "fio $rw on $file failed"; echo nan; return; }
	python3 - "$WORK/fio.json" "$rw" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
d = j["write" if "write" in sys.argv[2] else "read"]
print("%.1f" % (d["bw_bytes"] / 1e6 if not sys.argv[2].startswith("rand") else d["iops"]))
PY
}

fio_matrix() {
	local raw=$WORK/raw.img tfsimg=$WORK/tfs-fio.img
	local tm=$WORK/mnt-tfs lm=$WORK/mnt-loop lb=$WORK/loop-backing
	truncate -s 0 "$raw"
	"$TFS" mkfs --size 4G "$tfsimg" >/dev/null
	start_tfs "$tfsimg" "$tm"
	start_loop "$lb" "$lm"
	declare -A fig=()
	for jobs in 1 4; do
		for target in raw tfs loop; do
			case $target in
			raw) f=$raw ;;
			tfs) f=$tm/fio-$jobs.dat ;;
			loop) f=$lm/fio-$jobs.dat ;;
			esac
			log "fio $target jobs=$jobs"
			fig[$target.write.$jobs]=$(fio_run "$f" write 1M "$jobs")
			# Cold reads: FUSE daemons are remounted so no user-space cache
			# survives either, then the kernel's caches are dropped.
			if [ $target = tfs ]; then stop_mount "$tm"; start_tfs "$tfsimg" "$tm"; fi
			if [ $target = loop ]; then stop_mount "$lm"; start_loop "$lb" "$lm"; fi
			drop_caches
			fig[$target.read.$jobs]=$(fio_run "$f" read 1M "$jobs")
			drop_caches
			fig[$target.randread.$jobs]=$(fio_run "$f" randread 4k "$jobs")
			fig[$target.randwrite.$jobs]=$(fio_run "$f" randwrite 4k "$jobs")
		done
		record "seq write 1M, $jobs job(s)" MB/s 1 "${fig[raw.write.$jobs]}" "${fig[tfs.write.$jobs]}" "${fig[loop.write.$jobs]}"
		record "seq read 1M cold, $jobs job(s)" MB/s 1 "${fig[raw.read.$jobs]}" "${fig[tfs.read.$jobs]}" "${fig[loop.read.$jobs]}"
		record "rand read 4K, $jobs job(s)" IOPS 1 "${fig[raw.randread.$jobs]}" "${fig[tfs.randread.$jobs]}" "${fig[loop.randread.$jobs]}"
		record "rand write 4K, $jobs job(s)" IOPS 1 "${fig[raw.randwrite.$jobs]}" "${fig[tfs.randwrite.$jobs]}" "${fig[loop.randwrite.$jobs]}"
	done
	stop_mount "$tm"
	stop_mount "$lm"
	"$TFS" fsck "$tfsimg" >"$WORK/fsck-fio.txt" 2>&1 || log "fsck after fio not clean: $(head -5 "$WORK/fsck-fio.txt")"
	rm -rf "$raw" "$tfsimg" "$lb"
}

# ------------------------------------------------------------------ metadata
meta() {
	local tfsimg=$WORK/tfs-meta.img tm=$WORK/mnt-tfs lm=$WORK/mnt-loop lb=$WORK/loop-backing host=$WORK/meta-host
	"$TFS" mkfs --size 2G "$tfsimg" >/dev/null
	mkdir -p "$host"
	declare -A fig=()
	log "metadata: $NFILES files on the host directory"
	while read -r ph _ _ rate; do fig[raw.$ph]=$rate; done < <("$BIN/metabench" -n "$NFILES" "$host")
	start_tfs "$tfsimg" "$tm"
	log "metadata: $NFILES files on tfsmount"
	while read -r ph _ _ rate; do fig[tfs.$ph]=$rate; done < <("$BIN/metabench" -n "$NFILES" "$tm" || echo "create 0 0 nan")
	stop_mount "$tm"
	"$TFS" fsck "$tfsimg" >"$WORK/fsck-meta.txt" 2>&1 || log "fsck after metadata not clean: $(head -5 "$WORK/fsck-meta.txt")"
	start_loop "$lb" "$lm"
	log "metadata: $NFILES files on loopback"
	while read -r ph _ _ rate; do fig[loop.$ph]=$rate; done < <("$BIN/metabench" -n "$NFILES" "$lm")
	stop_mount "$lm"
	for ph in create stat unlink; do
		record "$ph ($NFILES files)" ops/s 1 "${fig[raw.$ph]:-nan}" "${fig[tfs.$ph]:-nan}" "${fig[loop.$ph]:-nan}"
	done
	rm -rf "$tfsimg" "$lb" "$host"
}

# ------------------------------------------------------------------ mount time
mount_time() {
	local tree=$WORK/tree100k img=$WORK/tfs-tree.img tm=$WORK/mnt-tfs lm=$WORK/mnt-loop
	log "mount time: building 100 dirs x 1000 files"
	python3 - "$tree" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(100):
    p = os.path.join(root, "dir%03d" % d)
    os.makedirs(p)
    for f in range(1000):
        with open(os.path.join(p, "file%04d" % f), "w") as fh:
            fh.write("%d/%d\n" % (d, f))
PY
	"$TFS" mkfs --size 1G --from "$tree" "$img" >/dev/null
	mkdir -p "$tm" "$lm"
	local tfs_times=() loop_times=()
	for i in 1 2 3; do
		drop_caches
		local t0 t1
		t0=$(date +%s.%N)
		"$TFS" -o ro "$img" "$tm"
		ls "$tm" >/dev/null
		t1=$(date +%s.%N)
		tfs_times+=("$(echo "$t1 - $t0" | bc)")
		fusermount3 -u "$tm"
		for _ in $(seq 600); do [ -z "$(fuser "$img" 2>/dev/null)" ] && break; sleep 0.1; done
		drop_caches
		t0=$(date +%s.%N)
		"$BIN/loopback" -q "$lm" "$tree" >>"$WORK/loopback.log" 2>&1 &
		local lp=$!
		for _ in $(seq 3000); do is_mounted "$lm" && break; sleep 0.005; done
		ls "$lm" >/dev/null
		t1=$(date +%s.%N)
		loop_times+=("$(echo "$t1 - $t0" | bc)")
		fusermount3 -u "$lm"
		wait "$lp" 2>/dev/null || true
	done
	median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
	record "mount 100x1000 files to first ls" s 0 - "$(median "${tfs_times[@]}")" "$(median "${loop_times[@]}")"
	rm -rf "$tree" "$img"
}

# ------------------------------------------------------------------ memory
rss() {
	local img=$WORK/tfs-rss.img tm=$WORK/mnt-tfs lm=$WORK/mnt-loop lb=$WORK/loop-backing
	"$TFS" mkfs --size 2G "$img" >/dev/null
	declare -A fig=()
	start_tfs "$img" "$tm" "cache_size=$CACHE"
	start_loop "$lb" "$lm"
	for target in tfs loop; do
		local mnt=$tm
		[ $target = loop ] && mnt=$lm
		log "memory: 1 GiB written and read back on $target"
		fio --name=rss --filename="$mnt/rss.dat" --rw=write --bs=1M --size=1G --end_fsync=1 \
			--ioengine=psync >/dev/null 2>>"$WORK/fio.err"
		drop_caches
		dd if="$mnt/rss.dat" of=/dev/null bs=1M status=none
		fig[$target]=$(awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/${DAEMON_OF[$mnt]}/status")
	done
	stop_mount "$tm"
	stop_mount "$lm"
	record "peak RSS, 1 GiB w+r (cache $CACHE)" MiB 0 - "${fig[tfs]}" "${fig[loop]}"
	RSS_BUDGET=$(($(bytes "$CACHE") / 1048576 + 96))
	rm -rf "$img" "$lb"
}

# ------------------------------------------------------------------ fsync-heavy
# What durability costs where applications ask for it often: 4 KiB random
# writes each followed by fsync, 4 KiB appends each followed by fdatasync
# (a new extent logged every time), and small files created with an fsync
# each. tfsmount beside BENCH_BEFORE (if given), loopback and the raw disk,
# two rounds interleaved, medians of the two.
SYNCRES=$WORK/sync.tsv
fio_sync() { # FILE RW SYNCFLAG -> IOPS
	fio --name=sync --filename="$1" --rw="$2" --bs=4k --size=64M "--$3=1" --time_based --runtime="$RUNTIME" \
		--ioengine=psync --output-format=json >"$WORK/fio.json" 2>>"$WORK/fio.err" ||
		{ log "fio $2 $3 on $1 failed"; echo nan; return; }
	python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; print("%.1f" % j["write"]["iops"])' "$WORK/fio.json"
}
sync_heavy() {
	local targets="tfs loop raw" img mnt
	[ -x "$BIN/tfsmount-before" ] && targets="before $targets"
	declare -A fig=()
	for round in 1 2; do
		for target in $targets; do
			case $target in
			tfs | before)
				local bin=$TFS
				[ $target = before ] && bin=$BIN/tfsmount-before
				img=$WORK/sync-$target.img mnt=$WORK/mnt-sync-$target
				"$bin" mkfs --size 2G "$img" >/dev/null
				start_tfs "$img" "$mnt" "" "$bin"
				;;
			loop)
				mnt=$WORK/mnt-sync-loop
				start_loop "$WORK/sync-loop-backing" "$mnt"
				;;
			raw)
				mnt=$WORK/sync-raw
				mkdir -p "$mnt"
				;;
			esac
			log "fsync-heavy: $target, round $round"
			fig[$target.rw.$round]=$(fio_sync "$mnt/rw.dat" randwrite fsync)
			fig[$target.app.$round]=$(fio_sync "$mnt/append.dat" write fdatasync)
			fig[$target.cr.$round]=$("$BIN/metabench" -fsync -n "$SYNC_FILES" "$mnt" | awk '$1 == "create+fsync" { print $4 }')
			case $target in
			tfs | before)
				stop_mount "$mnt"
				"$TFS" fsck "$img" >"$WORK/fsck-sync.txt" 2>&1 || log "fsck after fsync-heavy ($target) not clean: $(head -5 "$WORK/fsck-sync.txt")"
				rm -f "$img"
				;;
			loop)
				stop_mount "$mnt"
				rm -rf "$WORK/sync-loop-backing"
				;;
			raw) rm -rf "$mnt" ;;
			esac
		done
	done
	med() { printf '%s\n' "$1" "$2" | sort -g | awk '{ s += $1 } END { printf "%.1f", s / NR }'; }
	: >"$SYNCRES"
	for t in rw:"4K rand write + fsync each" app:"4K append + fdatasync each" cr:"create+write+fsync small file"; do
		local k=${t%%:*} name=${t#*:} row=
		for target in before tfs loop raw; do
			if [[ " $targets " == *" $target "* ]]; then
				row+=$'\t'$(med "${fig[$target.$k.1]}" "${fig[$target.$k.2]}")
			else
				row+=$'\t-'
			fi
		done
		printf '%s%s\n' "$name" "$row" >>"$SYNCRES"
	done
}

want fio && fio_matrix
want meta && meta
want mount && mount_time
want rss && rss
want sync && sync_heavy

# ------------------------------------------------------------------ report
{
	echo "tfsmount benchmark $stamp on $(hostname) ($(nproc) cores, kernel $(uname -r)); work dir $WORK ($(df --output=source "$WORK" | tail -1))"
	echo "fio: psync, seq total $SIZE split over the jobs, random ${RUNTIME}s; writes end with fsync; reads after remount + drop_caches"
	echo "note: reads are buffered; a peer that lets the kernel cache its pages warms that cache during the random-read run"
	python3 - "$RES" "$WORK/chart.dat" <<'PY'
import sys, math
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def num(s):
    try:
        v = float(s)
        return None if math.isnan(v) else v
    except ValueError:
        return None
def ratio(a, b):
    return "%.2f" % (a / b) if a is not None and b else "-"
w = max([len(r[0]) for r in rows] + [10])
print("%-*s %-6s %12s %12s %12s %10s %10s" % (w, "test", "unit", "raw", "tfsmount", "loopback", "tfs/loop", "tfs/raw"))
dat = open(sys.argv[2], "w")
for name, unit, hib, raw, tfs, loop in rows:
    r, t, l = num(raw), num(tfs), num(loop)
    fmt = lambda v: "-" if v is None else ("%.3f" % v if v < 10 else "%.1f" % v)
    print("%-*s %-6s %12s %12s %12s %10s %10s" % (w, name, unit, fmt(r), fmt(t), fmt(l), ratio(t, l), ratio(t, r)))
    # The chart shows throughput rows only, as tfsmount relative to
    # loopback. Mount time and memory are not like for like (loopback
    # serves a host directory and caches nothing itself); they are judged
    # in the table against their targets.
    if t and l and hib == "1":
        dat.write('"%s" %.4f\n' % (name.replace('"', "'"), t / l))
print("ratios are tfsmount / peer; for s and MiB rows lower is better, for the others higher")
PY
	if [ -n "${RSS_BUDGET:-}" ]; then
		echo "memory target: peak RSS within cache_size + 96 MiB = $RSS_BUDGET MiB"
	fi
	if [ -s "$SYNCRES" ]; then
		echo
		echo "fsync-heavy (ops/s, mean of 2 interleaved rounds; before = BENCH_BEFORE)"
		python3 - "$SYNCRES" <<'PY'
import sys
print("%-34s %10s %10s %10s %10s %12s %10s" % ("test", "before", "tfsmount", "loopback", "raw", "tfs/before", "tfs/loop"))
for l in open(sys.argv[1]):
    name, *v = l.rstrip("\n").split("\t")
    f = [float(x) if x not in ("-", "nan", "") else None for x in v]
    r = lambda a, b: "%.2f" % (a / b) if a is not None and b else "-"
    print("%-34s %10s %10s %10s %10s %12s %10s" % (name, *[("-" if x is None else "%.0f" % x) for x in f], r(f[1], f[0]), r(f[1], f[2])))
PY
	fi
} | tee "$txt"

if command -v gnuplot >/dev/null && [ -s "$WORK/chart.dat" ]; then
	gnuplot <<EOF
set terminal pngcairo size 1200,720 font ",10"
set bmargin 12
set rmargin 12
set output "$png"
set title "tfsmount throughput relative to go-fuse loopback (1.0 = loopback; higher is better; log scale)"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.8
set xtics rotate by -35 left
set logscale y
set yrange [0.01:10]
set grid ytics
set key off
set arrow from graph 0, first 1 to graph 1, first 1 nohead dashtype 2 lc rgb "red"
plot "$WORK/chart.dat" using 2:xtic(1) lc rgb "#3a7bd5"
EOF
	log "chart: $png"
fi
log "table: $txt"
