#!/usr/bin/env bash
# Layering check: every import inside the module points down.
#
# Each package has a rank; a package (its in-package tests included) may
# import only packages of a strictly lower rank, so no lower layer reaches up
# and two layers of one rank stay apart. An external test package (package
# p_test) sits just above p: it may also import p and p's test helpers,
# which rank between p and the next layer (tfs/format/formattest). Direct imports are checked, which makes
# `go list -deps` of any package show only lower layers too. A package
# missing from the table is an error: place it before it lands.
#
#   bash scripts/layers.sh        (run by make test)
set -euo pipefail
cd "$(dirname "$0")/.."
module=$(go list -m)

declare -A rank=(
	[heap]=10 [bh]=10 [irq]=10 # page buffers, bottom halves, interrupts
	[blockdev/uring]=15        # the io_uring ABI and ring, shared
	[blockdev]=20              # devices: io_uring, thread pool, memory
	[pagecache]=30             # file data cache over a device
	[tfs/format]=30            # the on-disk format, apart from the model
	[tfs/format/formattest]=35 # hand-built log images for tests
	[tfs]=40                   # the filesystem model
	[tfs/fusefs]=50            # the FUSE server over tfs
	[cmd/tfsmount]=60          # the program
	[tests]=70                 # end-to-end tests of the program
	[scripts/metabench]=70     # benchmark helper
)

imports=$(go list -f '{{.ImportPath}} {{join .Imports " "}} {{join .TestImports " "}}' ./...)
ximports=$(go list -f '{{.ImportPath}} {{join .XTestImports " "}}' ./...)

fail=0
while read -r pkg imports; do
	p=${pkg#"$module"/}
	if [ -z "${rank[$p]+x}" ]; then
		echo "layers: $p has no rank in scripts/layers.sh" >&2
		fail=1
		continue
	fi
	for imp in $imports; do
		case $imp in "$module"/*) ;; *) continue ;; esac
		i=${imp#"$module"/}
		if [ -z "${rank[$i]+x}" ]; then
			echo "layers: $p imports $i, which has no rank" >&2
			fail=1
		elif [ "${rank[$i]}" -ge "${rank[$p]}" ]; then
			echo "layers: $p (rank ${rank[$p]}) imports $i (rank ${rank[$i]}): imports must point down" >&2
			fail=1
		fi
	done
done <<<"$imports"

# External tests: below the next layer up (rank + 10).
while read -r pkg imports; do
	p=${pkg#"$module"/}
	[ -n "${rank[$p]+x}" ] || continue # reported above
	for imp in $imports; do
		case $imp in "$module"/*) ;; *) continue ;; esac
		i=${imp#"$module"/}
		if [ -z "${rank[$i]+x}" ]; then
			echo "layers: ${p}_test imports $i, which has no rank" >&2
			fail=1
		elif [ "${rank[$i]}" -ge $((rank[$p] + 10)) ]; then
			echo "layers: ${p}_test (rank ${rank[$p]}) imports $i (rank ${rank[$i]}): imports must point down" >&2
			fail=1
		fi
	done
done <<<"$ximports"
if [ "$fail" != 0 ]; then
	exit 1
fi
echo "layers: every import points down"
