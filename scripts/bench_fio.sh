#!/usr/bin/env bash
# Side-by-side benchmark of the blockdev backends and fio's io_uring engine
# on one file: 4 KiB random reads at QD1 and QD32, 1 MiB sequential reads
# and writes at QD1, all O_DIRECT. For each test, fio and both backends run
# back to back, ROUNDS times, and the best of each is kept (the machine is
# shared; interleaving keeps the three under the same load). Prints MB/s and
# ratios to fio.
# Usage: scripts/bench_fio.sh [dir]   (default: a temp dir under /tmp)
#        BENCH_SECONDS=3 ROUNDS=3 are the defaults; TESTS="RandRead4KQD1 ..."
#        picks a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
dir=${1:-$(mktemp -d /tmp/blockdev-bench.XXXXXX)}
file=$dir/bench.img
secs=${BENCH_SECONDS:-3}
rounds=${ROUNDS:-3}
[ -f "$file" ] || head -c $((256 << 20)) /dev/urandom >"$file"
sync "$file" # no write-back of the new file during the runs
go test -c -o "$dir/blockdev.test" ./blockdev/

fio_mbs() { # rw bs iodepth -> MB/s (decimal, as go test reports)
	fio --name=b --filename="$file" --ioengine=io_uring --direct=1 --rw="$1" --bs="$2" \
		--iodepth="$3" --runtime="$secs" --time_based --size=256m \
		--output-format=terse --terse-version=3 2>/dev/null |
		awk -F';' '{kb = ($7 > 0) ? $7 : $48; printf "%.1f\n", kb * 1024 / 1e6}'
}

go_mbs() { # benchmark name -> MB/s
	BLOCKDEV_BENCH_FILE=$file "$dir/blockdev.test" -test.run XXX -test.bench "^Benchmark$1\$" \
		-test.benchtime "${secs}s" | awk '/^Benchmark/ {print $(NF-1)}'
}

best() { echo "$1 $2" | awk '{print ($1 > $2) ? $1 : $2}'; }

declare -A fio_args=([RandRead4KQD1]="randread 4k 1" [RandRead4KQD32]="randread 4k 32"
	[SeqRead1M]="read 1m 1" [SeqWrite1M]="write 1m 1")
tests=${TESTS:-RandRead4KQD1 RandRead4KQD32 SeqRead1M SeqWrite1M}
printf '%-16s %10s %10s %10s %9s %9s\n' test "fio MB/s" "uring" "sync" "uring/fio" "sync/fio"
for t in $tests; do
	f=0 u=0 s=0
	for _ in $(seq "$rounds"); do
		# shellcheck disable=SC2086
		f=$(best "$f" "$(fio_mbs ${fio_args[$t]})")
		u=$(best "$u" "$(go_mbs "${t}Uring")")
		s=$(best "$s" "$(go_mbs "${t}Sync")")
	done
	printf '%-16s %10s %10s %10s %9.2f %9.2f\n' "$t" "$f" "$u" "$s" \
		"$(echo "$u / $f" | bc -l)" "$(echo "$s / $f" | bc -l)"
done
[ -n "${1:-}" ] || rm -rf "$dir"
