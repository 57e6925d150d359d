#!/bin/bash
# bench.sh - measure tfsmount side by side with its peers, in one run, on one disk.
#
# Usage: scripts/bench.sh [OUT]
#   OUT  the PNG chart to write, or a directory for it (default: results/).
#        The table is printed and saved next to the chart as bench-DATE.txt.
#
# Peers (README.md, "Speed"): "raw" is the work file itself (fio straight
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
#   BENCH_ONLY     space-separated subset of: fio nbd qd32 transport meta mount rss sync tree (default all)
#   BENCH_NBD_ROUNDS  rounds of the NBD test (default 2)
#   BENCH_BEFORE   another tfsmount binary (say, built from an earlier commit)
#                  to measure beside this one in the sync test, rounds
#                  interleaved: what a change to the write ordering costs
#   BENCH_SYNC_FILES  files for the create+fsync test (default 2000)
#   BENCH_TREE     the tree for the tree-work test (default: the Go distribution, GOROOT)
#   BENCH_TREE_ROUNDS  rounds of the tree-work test (default 2)
#   BENCH_NANOS    a Nanos build's output/ directory (tools/bin/mkfs, tools/bin/tfs-fuse,
#                  platform/pc/boot/boot.img): adds Nanos's tfs-fuse as a peer in the
#                  tree-work test. Build it outside this repository from a nanovms/nanos
#                  checkout: make tools, make tfs-fuse (needs libfuse-dev and nasm),
#                  make -C platform/pc boot
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
ONLY=${BENCH_ONLY:-fio nbd qd32 transport meta mount rss sync tree}
TREE=${BENCH_TREE:-$(go env GOROOT)}
NANOS=${BENCH_NANOS:-}
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

# median VALUE...: the middle value, or the mean of the middle two.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

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
fio_run() { # FILE RW BS JOBS [FIO OPTIONS...]
	local file=$1 rw=$2 bs=$3 jobs=$4 total per extra=("${@:5}")
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
			# What the peer before left dirty in the host's page cache
			# (raw writes are buffered) must not be written back during
			# this peer's run.
			sync
			fig[$target.write.$jobs]=$(fio_run "$f" write 1M "$jobs")
			# Cold reads: FUSE daemons are remounted so no user-space cache
			# survives either, then the kernel's caches are dropped.
			if [ $target = tfs ]; then stop_mount "$tm"; start_tfs "$tfsimg" "$tm"; fi
			if [ $target = loop ]; then stop_mount "$lm"; start_loop "$lb" "$lm"; fi
			drop_caches
			fig[$target.read.$jobs]=$(fio_run "$f" read 1M "$jobs")
			drop_caches
			fig[$target.randread.$jobs]=$(fio_run "$f" randread 4k "$jobs")
			if [ $target = raw ]; then
				# The target for random reads: the image file with O_DIRECT
				# (no page cache), at the same queue depth.
				fig[rawdirect.randread.$jobs]=$(fio_run "$f" randread 4k "$jobs" --direct=1)
			fi
			fig[$target.randwrite.$jobs]=$(fio_run "$f" randwrite 4k "$jobs")
		done
		record "seq write 1M, $jobs job(s)" MB/s 1 "${fig[raw.write.$jobs]}" "${fig[tfs.write.$jobs]}" "${fig[loop.write.$jobs]}"
		record "seq read 1M cold, $jobs job(s)" MB/s 1 "${fig[raw.read.$jobs]}" "${fig[tfs.read.$jobs]}" "${fig[loop.read.$jobs]}"
		record "rand read 4K, $jobs job(s)" IOPS 1 "${fig[raw.randread.$jobs]}" "${fig[tfs.randread.$jobs]}" "${fig[loop.randread.$jobs]}"
		record "rand read 4K, $jobs job(s), raw O_DIRECT" IOPS 1 "${fig[rawdirect.randread.$jobs]}" "${fig[tfs.randread.$jobs]}" "${fig[loop.randread.$jobs]}"
		record "rand write 4K, $jobs job(s)" IOPS 1 "${fig[raw.randwrite.$jobs]}" "${fig[tfs.randwrite.$jobs]}" "${fig[loop.randwrite.$jobs]}"
	done
	stop_mount "$tm"
	stop_mount "$lm"
	"$TFS" fsck "$tfsimg" >"$WORK/fsck-fio.txt" 2>&1 || log "fsck after fio not clean: $(head -5 "$WORK/fsck-fio.txt")"
	rm -rf "$raw" "$tfsimg" "$lb"
}

# ------------------------------------------------------------------ NBD
# The same volume mounted from its image file, through qemu-nbd and through
# nbdkit's file plugin on 127.0.0.1 (raw, O_DIRECT, as the file backend
# does), rounds interleaved: what the network round trip costs. qemu-nbd
# serves a connection from one thread; nbdkit from several. Jobs run
# on a 1 GiB file in the mount: sequential 1 MiB write and cold read, and
# O_DIRECT 1 MiB sequential and 4 KiB random I/O at 32 in flight, and
# 4 KiB random reads at 1.
NBDRES=$WORK/nbd.tsv
fio_figure() { # FILE NAME FIO-OPTIONS... -> MB/s (seq) or IOPS (rand), and mean latency µs
	local f=$1 name=$2
	shift 2
	fio --name="$name" --filename="$f" --size=1G "$@" --output-format=json >"$WORK/fio.json" 2>>"$WORK/fio.err" ||
		{ log "fio $name on $f failed"; echo "nan nan"; return; }
	python3 - "$WORK/fio.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
d = j["write"] if j["write"]["io_bytes"] > j["read"]["io_bytes"] else j["read"]
seq = j["job options"].get("rw") in ("read", "write")
print("%.1f %.1f" % (d["bw_bytes"] / 1e6 if seq else d["iops"], d["lat_ns"]["mean"] / 1e3))
PY
}
nbd_bench() {
	local img=$WORK/tfs-nbd.img tm=$WORK/mnt-tfs port=${BENCH_NBD_PORT:-10899} qpid
	command -v qemu-nbd >/dev/null || { log "nbd: qemu-nbd missing (make setup installs qemu-utils); skipped"; return; }
	"$TFS" mkfs --size 2G "$img" >/dev/null
	declare -A fig=()
	for round in $(seq "${BENCH_NBD_ROUNDS:-2}"); do
		for target in file nbd nbdkit; do
			local src=$img
			case $target in
			nbd)
				qemu-nbd --persistent --shared=4 --cache=none --aio=native -f raw -x vol -b 127.0.0.1 -p "$port" "$img" &
				qpid=$!
				sleep 1
				src=nbd://127.0.0.1:$port/vol
				;;
			nbdkit)
				command -v nbdkit >/dev/null || continue
				nbdkit -f -i 127.0.0.1 -p "$port" file file="$img" cache=none &
				qpid=$!
				sleep 1
				src=nbd://127.0.0.1:$port/
				;;
			esac
			log "nbd: round $round, $target"
			start_tfs "$src" "$tm"
			sync
			read -r v l < <(fio_figure "$tm/nbd.dat" seqwrite --rw=write --bs=1M --end_fsync=1)
			fig[$target.seqwrite.$round]=$v
			stop_mount "$tm"
			drop_caches
			start_tfs "$src" "$tm"
			read -r v l < <(fio_figure "$tm/nbd.dat" seqread --rw=read --bs=1M)
			fig[$target.seqread.$round]=$v
			read -r v l < <(fio_figure "$tm/nbd.dat" seqread32 --rw=read --bs=1M --direct=1 --ioengine=io_uring --iodepth=32)
			fig[$target.seqread32.$round]=$v
			read -r v l < <(fio_figure "$tm/nbd.dat" seqwrite32 --rw=write --bs=1M --direct=1 --ioengine=io_uring --iodepth=32 --end_fsync=1)
			fig[$target.seqwrite32.$round]=$v
			read -r v l < <(fio_figure "$tm/nbd.dat" qd1 --rw=randread --bs=4k --direct=1 --ioengine=psync --time_based --runtime="$RUNTIME")
			fig[$target.qd1.$round]=$v fig[$target.qd1lat.$round]=$l
			read -r v l < <(fio_figure "$tm/nbd.dat" qd32 --rw=randread --bs=4k --direct=1 --ioengine=io_uring --iodepth=32 --time_based --runtime="$RUNTIME")
			fig[$target.qd32.$round]=$v
			read -r v l < <(fio_figure "$tm/nbd.dat" qd32w --rw=randwrite --bs=4k --direct=1 --ioengine=io_uring --iodepth=32 --time_based --runtime="$RUNTIME" --end_fsync=1)
			fig[$target.qd32w.$round]=$v
			rm -f "$tm/nbd.dat" # the next target writes a new file too
			stop_mount "$tm"
			if [ $target != file ]; then kill "$qpid"; wait "$qpid" 2>/dev/null || true; fi
		done
	done
	"$TFS" fsck "$img" >"$WORK/fsck-nbd.txt" 2>&1 || log "fsck after nbd not clean: $(head -5 "$WORK/fsck-nbd.txt")"
	for m in "seqwrite|seq write 1M (MB/s)" "seqread|seq read 1M cold (MB/s)" \
		"seqwrite32|seq write 1M O_DIRECT qd32 (MB/s)" "seqread32|seq read 1M O_DIRECT qd32 (MB/s)" "qd1|rand read 4K O_DIRECT qd1 (IOPS)" \
		"qd1lat|  mean latency qd1 (µs)" "qd32|rand read 4K O_DIRECT qd32 (IOPS)" "qd32w|rand write 4K O_DIRECT qd32 (IOPS)"; do
		local k=${m%%|*} name=${m#*|} fv=() nv=() kv=()
		for round in $(seq "${BENCH_NBD_ROUNDS:-2}"); do
			fv+=("${fig[file.$k.$round]}") nv+=("${fig[nbd.$k.$round]}") kv+=("${fig[nbdkit.$k.$round]:-nan}")
		done
		printf '%s\t%s\t%s\t%s\n' "$name" "$(median "${fv[@]}")" "$(median "${nv[@]}")" "$(median "${kv[@]}")" >>"$NBDRES"
	done
	rm -f "$img"
}

# ------------------------------------------------------------------ queue depth 32
# The fio job most people run first: 4 KiB random read/write 50/50,
# O_DIRECT, 32 in flight, with libaio and with io_uring, on a 1 GiB file:
# tfsmount against the same job on a file of the host filesystem ("raw")
# and on loopback.
fio_qd32_run() { # FILE ENGINE -> "READ_IOPS WRITE_IOPS"
	fio --name=qd32 --filename="$1" --rw=randrw --rwmixread=50 --bs=4k --size=1G --direct=1 \
		--iodepth=32 --ioengine="$2" --time_based --runtime="$RUNTIME" --output-format=json \
		>"$WORK/fio.json" 2>>"$WORK/fio.err" || { log "fio qd32 $2 on $1 failed"; echo "nan nan"; return; }
	python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; print("%.1f %.1f" % (j["read"]["iops"], j["write"]["iops"]))' "$WORK/fio.json"
}
fio_qd32() {
	local tfsimg=$WORK/tfs-qd32.img tm=$WORK/mnt-tfs lm=$WORK/mnt-loop lb=$WORK/loop-backing host=$WORK/qd32-host
	"$TFS" mkfs --size 2G "$tfsimg" >/dev/null
	mkdir -p "$host"
	start_tfs "$tfsimg" "$tm"
	start_loop "$lb" "$lm"
	declare -A fig=()
	for engine in libaio io_uring; do
		for target in raw tfs loop; do
			case $target in
			raw) f=$host/qd32.dat ;;
			tfs) f=$tm/qd32.dat ;;
			loop) f=$lm/qd32.dat ;;
			esac
			# Lay the file down first, so the job measures I/O, not allocation.
			[ -f "$f" ] || fio --name=lay --filename="$f" --rw=write --bs=1M --size=1G --end_fsync=1 >/dev/null 2>>"$WORK/fio.err"
			log "fio qd32 $engine $target"
			sync
			read -r fig[$target.r.$engine] fig[$target.w.$engine] < <(fio_qd32_run "$f" $engine)
		done
		record "randrw 4K qd32 $engine, read" IOPS 1 "${fig[raw.r.$engine]}" "${fig[tfs.r.$engine]}" "${fig[loop.r.$engine]}"
		record "randrw 4K qd32 $engine, write" IOPS 1 "${fig[raw.w.$engine]}" "${fig[tfs.w.$engine]}" "${fig[loop.w.$engine]}"
	done
	stop_mount "$tm"
	stop_mount "$lm"
	"$TFS" fsck "$tfsimg" >"$WORK/fsck-qd32.txt" 2>&1 || log "fsck after qd32 not clean: $(head -5 "$WORK/fsck-qd32.txt")"
	rm -rf "$tfsimg" "$lb" "$host"
}

# ------------------------------------------------------------------ FUSE transport
# One volume mounted with fuse_uring=off (/dev/fuse) and fuse_uring=on (FUSE
# over io_uring), rounds interleaved: 4 KiB O_DIRECT reads of a 128 MiB
# file that sits in tfsmount's cache (the transport's own cost), at 1 and
# 32 in flight; the 4 KiB randrw qd32 job on a 1 GiB file (the device
# answers); and a cold 1 MiB sequential read. Needs root and the kernel's
# switch, which this section turns on and back off.
URINGRES=$WORK/transport.tsv
transport_bench() {
	local img=$WORK/tfs-transport.img tm=$WORK/mnt-tfs param=/sys/module/fuse/parameters/enable_uring old
	[ -w $param ] || { log "transport: no $param; skipped"; return; }
	old=$(cat $param)
	echo Y >$param
	"$TFS" mkfs --size 2G "$img" >/dev/null
	declare -A fig=()
	for round in $(seq "${BENCH_URING_ROUNDS:-2}"); do
		for target in off on; do
			start_tfs "$img" "$tm" "fuse_uring=$target"
			[ -f "$tm/small.dat" ] || fio --name=lay --filename="$tm/small.dat" --rw=write --bs=1M --size=128M --end_fsync=1 >/dev/null 2>>"$WORK/fio.err"
			[ -f "$tm/big.dat" ] || fio --name=lay --filename="$tm/big.dat" --rw=write --bs=1M --size=1G --end_fsync=1 >/dev/null 2>>"$WORK/fio.err"
			log "transport: round $round, fuse_uring=$target"
			drop_caches
			read -r v _ < <(fio_figure "$tm/big.dat" seqread --rw=read --bs=1M)
			fig[$target.seqread.$round]=$v
			cat "$tm/small.dat" >/dev/null # into tfsmount's cache
			read -r v _ < <(fio_figure "$tm/small.dat" qd1 --size=128M --rw=randread --bs=4k --direct=1 --ioengine=psync --time_based --runtime="$RUNTIME")
			fig[$target.qd1.$round]=$v
			read -r v _ < <(fio_figure "$tm/small.dat" qd32 --size=128M --rw=randread --bs=4k --direct=1 --ioengine=io_uring --iodepth=32 --time_based --runtime="$RUNTIME")
			fig[$target.qd32.$round]=$v
			read -r r w < <(fio_qd32_run "$tm/big.dat" io_uring)
			fig[$target.rw.$round]=$r
			stop_mount "$tm"
		done
	done
	echo "$old" >$param
	"$TFS" fsck "$img" >"$WORK/fsck-transport.txt" 2>&1 || log "fsck after transport not clean: $(head -5 "$WORK/fsck-transport.txt")"
	for m in "qd1|cached rand read 4K O_DIRECT qd1 (IOPS)" "qd32|cached rand read 4K O_DIRECT qd32 (IOPS)" \
		"rw|randrw 4K qd32 io_uring, read (IOPS)" "seqread|seq read 1M cold (MB/s)"; do
		local k=${m%%|*} name=${m#*|} ov=() nv=()
		for round in $(seq "${BENCH_URING_ROUNDS:-2}"); do
			ov+=("${fig[off.$k.$round]}") nv+=("${fig[on.$k.$round]}")
		done
		printf '%s\t%s\t%s\n' "$name" "$(median "${ov[@]}")" "$(median "${nv[@]}")" >>"$URINGRES"
	done
	rm -f "$img"
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
	: >"$SYNCRES"
	for t in rw:"4K rand write + fsync each" app:"4K append + fdatasync each" cr:"create+write+fsync small file"; do
		local k=${t%%:*} name=${t#*:} row=
		for target in before tfs loop raw; do
			if [[ " $targets " == *" $target "* ]]; then
				row+=$'\t'$(median "${fig[$target.$k.1]}" "${fig[$target.$k.2]}")
			else
				row+=$'\t-'
			fi
		done
		printf '%s%s\n' "$name" "$row" >>"$SYNCRES"
	done
}

# ------------------------------------------------------------------ tree work
# What users do with a mounted volume: copy a source tree in (cp -a, then
# sync), archive it out with cold caches (tar), delete it (rm -rf). The
# tree is TREE (default: the Go distribution). Peers: loopback, and Nanos's
# tfs-fuse when BENCH_NANOS names a Nanos build's output directory (it
# cannot copy a tree in, so its tree is laid down by Nanos's own mkfs).
# Rounds interleave the peers; figures are the median of the rounds.
# tfsmount and tfs-fuse are mounted as root mounts them by default;
# loopback needs -allow-other here.
# FUSE requests per file come from the kernel's fuse_request_send
# tracepoint, counted for the daemon's connection only, so every peer is
# counted the same way; daemon CPU per file from /proc/PID/stat.
TREERES=$WORK/tree.tsv
TREEREQ=$WORK/tree-requests.tsv
TRACE=/sys/kernel/tracing
trace_on() { # MNT: start counting the FUSE requests of MNT's connection
	local dev
	dev=$(awk -v m="$1" '$5 == m { print $3 }' /proc/self/mountinfo)
	[ -d $TRACE/events ] || mount -t tracefs nodev $TRACE 2>/dev/null || true
	[ -d $TRACE/events/fuse ] || { TRACE_OK=0; return; }
	TRACE_OK=1
	mkdir -p $TRACE/instances/tfsbench
	local t=$TRACE/instances/tfsbench
	echo 0 >$t/tracing_on
	echo 65536 >$t/buffer_size_kb
	echo "connection == $((${dev%%:*} << 20 | ${dev##*:}))" >$t/events/fuse/fuse_request_send/filter
	echo 1 >$t/events/fuse/fuse_request_send/enable
	: >$t/trace
	echo 1 >$t/tracing_on
}
trace_off() { # PEER PHASE NFILES: stop counting, append per-file counts to TREEREQ
	[ "$TRACE_OK" = 1 ] || return 0
	local t=$TRACE/instances/tfsbench
	echo 0 >$t/tracing_on
	echo 0 >$t/events/fuse/fuse_request_send/enable
	python3 - "$t/trace" "$1" "$2" "$3" "$t/per_cpu" >>"$TREEREQ" <<'PY'
import collections, glob, re, sys
trace, peer, phase, nfiles = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
n = collections.Counter()
for l in open(trace):
    m = re.search(r"opcode \d+ \(FUSE_(\w+)\)", l)
    if m:
        n[m[1]] += 1
lost = sum(int(re.search(r"overrun: (\d+)", open(f).read())[1]) for f in glob.glob(sys.argv[5] + "/cpu*/stats"))
for op, c in sorted(n.items()):
    print("%s\t%s\t%s\t%.3f" % (peer, phase, op, c / nfiles))
if lost:
    print("%s\t%s\t(events lost)\t%d" % (peer, phase, lost))
PY
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

start_tfsfuse() { # IMAGE MNT
	mkdir -p "$2"
	"$NANOS/tools/bin/tfs-fuse" -f "$2" "$1" >>"$WORK/tfs-fuse.log" 2>&1 &
	DAEMON_OF[$2]=$!
	wait_mounted "$2" $!
}

# nanos_tree_image SRC IMAGE: lay SRC down as /tree on a Nanos-made volume.
nanos_tree_image() {
	python3 - "$1" >"$WORK/tree.manifest" <<'PY'
import os, sys
def node(p):
    if os.path.islink(p) or not (os.path.isdir(p) or os.path.isfile(p)):
        return None
    if os.path.isfile(p):
        return "(contents:(host:%s))" % p
    kids = []
    for name in sorted(os.listdir(p)):
        k = node(os.path.join(p, name))
        if k is not None and all(c.isalnum() or c in "._-+" for c in name):
            kids.append("%s:%s" % (name, k))
    return "(children:(%s))" % " ".join(kids)
print("(children:(tree:%s))" % node(sys.argv[1]))
PY
	echo x >"$WORK/nokernel"
	"$NANOS/tools/bin/mkfs" -s 4G -b "$NANOS/platform/pc/boot/boot.img" -k "$WORK/nokernel" "$2" <"$WORK/tree.manifest" >>"$WORK/tfs-fuse.log" 2>&1
}

tree_work() {
	local src=$WORK/tree-src rounds=${BENCH_TREE_ROUNDS:-2} peers="loop tfs" nfiles
	log "tree work: copying $TREE to the work disk"
	rm -rf "$src" && cp -a "$TREE" "$src"
	nfiles=$(find "$src" | wc -l)
	: >"$TREEREQ"
	if [ -n "$NANOS" ]; then
		peers="loop tfsfuse tfs"
		log "tree work: laying the tree down with Nanos's mkfs for tfs-fuse"
		nanos_tree_image "$src" "$WORK/tfsfuse-master.img"
		# Only what Nanos's mkfs took counts for tfs-fuse's figures.
		start_tfsfuse "$WORK/tfsfuse-master.img" "$WORK/mnt-tree"
		nf_fuse=$(find "$WORK/mnt-tree/tree" | wc -l)
		stop_mount "$WORK/mnt-tree"
	fi
	declare -A fig=()
	timed() { local t0; t0=$(date +%s.%N); "$@"; echo "$(date +%s.%N) - $t0" | bc; }
	for round in $(seq "$rounds"); do
		for peer in $peers; do
			local mnt=$WORK/mnt-tree img=$WORK/tree-$peer.img back=$WORK/tree-loop-backing pid n=$nfiles
			start_peer() {
				case $peer in
				tfs)
					# As root mounts it by default, like tfs-fuse: without
					# allow_other, so without default_permissions (whose
					# permission checks ask for a directory's attributes
					# again after every change in it).
					mkdir -p "$mnt"
					"$TFS" -f "$img" "$mnt" >>"$WORK/tfsmount.log" 2>&1 &
					DAEMON_OF[$mnt]=$!
					wait_mounted "$mnt" $!
					;;
				loop) start_loop "$back" "$mnt" ;;
				tfsfuse) start_tfsfuse "$img" "$mnt" ;;
				esac
				pid=${DAEMON_OF[$mnt]}
			}
			phase() { # NAME COMMAND...: time it, count its requests and CPU
				local name=$1 c0 secs
				shift
				trace_on "$mnt"
				c0=$(cpu_ticks "$pid")
				secs=$(timed "$@")
				fig[$peer.$name.$round]=$secs
				[ "$round" = 1 ] && trace_off "$peer" "$name" "$n"
				[ "$round" = 1 ] && echo -e "$peer\t$name\tCPU µs\t$(((($(cpu_ticks "$pid") - c0) * 1000000 / $(getconf CLK_TCK)) / n))" >>"$TREEREQ"
				[ "$TRACE_OK" = 1 ] && echo 0 >$TRACE/instances/tfsbench/tracing_on
				log "tree work: $peer $name round $round: $secs s"
			}
			rm -rf "$back" "$img"
			case $peer in
			tfs) "$TFS" mkfs --size 4G "$img" >/dev/null ;;
			tfsfuse) cp --sparse=always "$WORK/tfsfuse-master.img" "$img"; n=$nf_fuse ;;
			esac
			if [ $peer != tfsfuse ]; then
				start_peer
				phase cp sh -c "cp -a '$src' '$mnt/tree' && sync"
				stop_mount "$mnt"
			fi
			drop_caches
			start_peer
			phase tar sh -c "tar -C '$mnt/tree' -cf - . | cat >/dev/null"
			phase rm rm -rf "$mnt/tree"
			stop_mount "$mnt"
			if [ $peer = tfs ]; then
				"$TFS" fsck "$img" >"$WORK/fsck-tree.txt" 2>&1 || log "fsck after tree work not clean: $(head -5 "$WORK/fsck-tree.txt")"
			fi
			rm -rf "$back" "$img"
		done
	done
	local med
	: >"$TREERES"
	for ph in cp:"cp -a in + sync" tar:"tar out, cold" rm:"rm -rf"; do
		local k=${ph%%:*} row="${ph#*:}"
		for peer in loop tfsfuse tfs; do
			local vals=()
			for round in $(seq "$rounds"); do
				[ -n "${fig[$peer.$k.$round]:-}" ] && vals+=("${fig[$peer.$k.$round]}")
			done
			if [ ${#vals[@]} -gt 0 ]; then row+=$'\t'$(median "${vals[@]}"); else row+=$'\t-'; fi
		done
		printf '%s\n' "$row" >>"$TREERES"
	done
	TREE_FILES="$nfiles entries${nf_fuse:+ ($nf_fuse on the tfs-fuse volume)}"
	rm -rf "$src" "$WORK/tfsfuse-master.img"
}

want fio && fio_matrix
want nbd && nbd_bench
want qd32 && fio_qd32
want transport && transport_bench
want meta && meta
want mount && mount_time
want rss && rss
want sync && sync_heavy
want tree && tree_work

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
	if [ -s "${NBDRES:-}" ]; then
		echo
		echo "NBD: one volume from its image file, and through qemu-nbd and nbdkit on 127.0.0.1 (median of ${BENCH_NBD_ROUNDS:-2} interleaved rounds)"
		python3 - "$NBDRES" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
print("%-38s %10s %10s %10s %10s %10s" % ("test", "file", "qemu-nbd", "nbdkit", "qemu/file", "kit/file"))
lat = {}
for name, f, n, k in rows:
    f, n, k = float(f), float(n), float(k)
    r = lambda a: "%.2f" % (a / f) if f and a == a else "-"
    print("%-38s %10.1f %10.1f %10.1f %10s %10s" % (name, f, n, k, r(n), r(k)))
    if "latency" in name:
        lat = (f, n, k)
if lat:
    print("the NBD round trip adds %.0f µs (qemu-nbd), %.0f µs (nbdkit) to each 4 KiB read at queue depth 1" % (lat[1] - lat[0], lat[2] - lat[0]))
PY
	fi
	if [ -s "${URINGRES:-}" ]; then
		echo
		echo "FUSE transport: one volume over /dev/fuse and over io_uring (median of ${BENCH_URING_ROUNDS:-2} interleaved rounds)"
		python3 - "$URINGRES" <<'PY'
import sys
print("%-42s %12s %12s %8s" % ("test", "/dev/fuse", "io_uring", "ratio"))
for l in open(sys.argv[1]):
    name, o, n = l.rstrip("\n").split("\t")
    o, n = float(o), float(n)
    print("%-42s %12.1f %12.1f %8s" % (name, o, n, "%.2f" % (n / o) if o else "-"))
PY
	fi
	if [ -s "${TREERES:-}" ]; then
		echo
		echo "tree work on $TREE_FILES (s, median of ${BENCH_TREE_ROUNDS:-2} interleaved rounds; tfs-fuse's tree laid down by Nanos's mkfs)"
		python3 - "$TREERES" <<'PY'
import sys
print("%-22s %10s %10s %10s %10s %12s" % ("test", "loopback", "tfs-fuse", "tfsmount", "tfs/loop", "tfs/tfs-fuse"))
for l in open(sys.argv[1]):
    name, *v = l.rstrip("\n").split("\t")
    f = [float(x) if x not in ("-", "nan", "") else None for x in v]
    r = lambda a, b: "%.2f" % (a / b) if a is not None and b else "-"
    print("%-22s %10s %10s %10s %10s %12s" % (name, *[("-" if x is None else "%.2f" % x) for x in f], r(f[2], f[0]), r(f[2], f[1])))
PY
		echo
		echo "FUSE requests per file by opcode (kernel tracepoint fuse_request_send), and daemon CPU µs per file; round 1"
		python3 - "$TREEREQ" <<'PY'
import collections, sys
rows = collections.OrderedDict()
for l in open(sys.argv[1]):
    peer, phase, op, v = l.rstrip("\n").split("\t")
    rows.setdefault((phase, peer), []).append((op, v))
for (phase, peer), ops in rows.items():
    cpu = [v for op, v in ops if op == "CPU µs"]
    reqs = sorted(((op, float(v)) for op, v in ops if op not in ("CPU µs", "(events lost)")), key=lambda x: -x[1])
    total = sum(v for _, v in reqs)
    print("%-4s %-8s total %5.2f  CPU %s µs  %s" % (phase, peer, total, cpu[0] if cpu else "-", " ".join("%s %.2f" % (op, v) for op, v in reqs if v >= 0.01)))
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
