#!/usr/bin/env bash
# The speed suite of issue 14 in one go: runs bench/nbd.sh, bench/cow.sh,
# bench/fuse.sh and bench/dax.sh, each with its peer in the same run and
# the median of ROUNDS rounds, and prints ONE table of ratios:
#   what | daxsnap | peer | ratio | goal
# Each script's own output is kept in OUT (and shown with VERBOSE=1), so a
# row can be checked against the script that made it.
#
# Environment (defaults in brackets):
#   ROUNDS   rounds per script, median shown [3]
#   PARTS    which scripts ["nbd cow cowhuge fuse dax"]; cowhuge is cow.sh
#            again on a tmpfs mounted huge=always (needs root)
#   QUICK=1  a short run: 2 s fio runs, 256M NBD/FUSE exports, 64M COW
#            export, DAX part 2 only at small sizes (figures are noisier)
#   RUNTIME  seconds per fio run for nbd.sh and fuse.sh [10, QUICK 2]
#   NBD_SIZE nbd.sh export size [1G, QUICK 256M]
#   COW_SIZE cow.sh export size [256M, QUICK 64M]
#   COW_SERVER daxsnap row of cow.sh: daxsnap (writes to the origin) or
#            daxsnap-snap (writes to the snapshot) [daxsnap]
#   FUSE_SIZE fuse.sh volume size [1G, QUICK 256M]
#   OUT      directory for the scripts' logs [a new one in /tmp]
# Needs what the scripts need (see each); cowhuge, fuse.sh and dax.sh need root and
# are left out (their rows say why) without it.
set -uo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROUNDS=${ROUNDS:-3}
PARTS=${PARTS:-"nbd cow cowhuge fuse dax"}
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
	RUNTIME=${RUNTIME:-2} NBD_SIZE=${NBD_SIZE:-256M} COW_SIZE=${COW_SIZE:-64M} FUSE_SIZE=${FUSE_SIZE:-256M}
fi
RUNTIME=${RUNTIME:-10}
NBD_SIZE=${NBD_SIZE:-1G}
COW_SIZE=${COW_SIZE:-256M}
COW_SERVER=${COW_SERVER:-daxsnap}
FUSE_SIZE=${FUSE_SIZE:-1G}
OUT=${OUT:-$(mktemp -d /tmp/benchall.XXXXXX)}
mkdir -p "$OUT"
rows="$OUT/rows" # what|daxsnap|peer|ratio|goal
: >"$rows"

has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
run() { # name cmd...: run a script, its output to $OUT/name.log
	local n=$1
	shift
	echo "all.sh: $n: $*" >&2
	if [ "${VERBOSE:-0}" = 1 ]; then "$@" 2>&1 | tee "$OUT/$n.log"; else "$@" >"$OUT/$n.log" 2>&1; fi
	local rc=${PIPESTATUS[0]}
	[ "$rc" -eq 0 ] || echo "all.sh: $n failed (exit $rc), see $OUT/$n.log" >&2
	return "$rc"
}
row() { printf '%s|%s|%s|%s|%s\n' "$@" >>"$rows"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# col LOG WORKLOAD N: the Nth field of the workload's row of a bench_table.
col() { awk -v w="$2" -v n="$3" '$1 == w { print $n; exit }' "$1"; }
# table_rows LOG WHAT SUFFIX4K PEER GOAL4K GOAL1M: the rows of a two-column
# bench_table (daxsnap first, then its peer): IOPS for 4k, MiB/s for 1M.
table_rows() {
	local wl d p
	for wl in randread:4k randwrite:4k; do
		d=$(col "$1" "$wl" 2) p=$(col "$1" "$wl" 4)
		row "$2 ${wl%%:*} 4k$3" "$(k "$d") IOPS$(bound "$1" "$wl" daxsnap)" "$4 $(k "$p")$(bound "$1" "$wl" nbdkit)" "$(ratio "$d" "$p")" "$5"
	done
	for wl in read:1M write:1M; do
		d=$(col "$1" "$wl" 3) p=$(col "$1" "$wl" 5)
		row "$2 ${wl%%:*} 1M" "$d MiB/s" "$4 $p" "$(ratio "$d" "$p")" "$6"
	done
}
# bound LOG WORKLOAD SERVER: " (CPU-bound R)" from the server's line of
# nbd.sh's CPU table, or nothing (fuse.sh has none).
bound() {
	local b
	b=$(awk -v w="$2" -v s="$3" '$1 == "cpu" && $2 == w && $3 == s { print $6; exit }' "$1")
	[ -n "$b" ] && echo " (CPU-bound $(k "$b"))"
}
k() { awk -v x="$1" 'BEGIN { if (x == "") print "?"; else if (x >= 10000) printf "%.1fk", x / 1000; else printf "%.0f", x }'; }

if has nbd; then
	if run nbd env SERVERS="daxsnap nbdkit" RUNTIME="$RUNTIME" SIZE="$NBD_SIZE" ROUNDS="$ROUNDS" \
		WORKLOADS="randread:4k randwrite:4k read:1M write:1M" bench/nbd.sh; then
		table_rows "$OUT/nbd.log" "NBD" ", iodepth 16" "nbdkit memory" ">= 1.1" ">= 1.1"
	else
		row "NBD rows" "failed" "see $OUT/nbd.log" "" ""
	fi
fi

# cow_rows NAME LABEL [VAR=VALUE...]: cow.sh's two rows, run with the
# settings given (SHMDIR: where its tmpfs files go), labelled LABEL.
cow_rows() {
	local n=$1 label=$2 l="$OUT/$1.log" d p db pb
	shift 2
	if ! run "$n" env "$@" SERVERS="$COW_SERVER nbdkit" SIZE="$COW_SIZE" NSNAPS=none ROUNDS="$ROUNDS" \
		WORKLOADS="randwrite:4k write:1M" CHUNK=4k bench/cow.sh; then
		row "COW rows$label" "failed" "see $l" "" ""
		return
	fi
	# cow.sh's table: workload server IOPS MiB/s CPU fio CPU-bound
	d=$(cowcol "$l" randwrite:4k "$COW_SERVER" 3) p=$(cowcol "$l" randwrite:4k nbdkit 3)
	db=$(cowcol "$l" randwrite:4k "$COW_SERVER" 7) pb=$(cowcol "$l" randwrite:4k nbdkit 7)
	row "first writes after a snapshot, randwrite 4k (COW 4k, $COW_SERVER$label)" "$(k "$d") IOPS (CPU-bound $(k "$db"))" "nbdkit cow $(k "$p") (CPU-bound $(k "$pb"))" "$(ratio "$d" "$p")" ">= 1.5"
	d=$(cowcol "$l" write:1M "$COW_SERVER" 4) p=$(cowcol "$l" write:1M nbdkit 4)
	row "first writes after a snapshot, write 1M (COW 4k, $COW_SERVER$label)" "$d MiB/s" "nbdkit cow $p" "$(ratio "$d" "$p")" ">= 1.5"
}
# cowcol LOG WORKLOAD SERVER N: the Nth field of the server's row of cow.sh's table.
cowcol() { awk -v w="$2" -v s="$3" -v n="$4" '$1 == w && $2 == s { print $n; exit }' "$1"; }

has cow && cow_rows cow ""

# The same on a tmpfs in 2 MiB pages (huge=always), where daxsnap stores
# through its mapping instead of pwrite (backing.FileWrites); both servers'
# files are on it.
if has cowhuge; then
	if [ "$(id -u)" -ne 0 ]; then
		row "COW rows, tmpfs huge=always" "skipped" "needs root (mount)" "" ""
	else
		hugedir=$(mktemp -d /tmp/benchhuge.XXXXXX)
		if mount -t tmpfs -o "huge=always,size=$((4 * $(numfmt --from=iec "$COW_SIZE") + (64 << 20)))" tmpfs "$hugedir"; then
			cow_rows cowhuge ", tmpfs huge=always" SHMDIR="$hugedir"
			umount "$hugedir"
		else
			row "COW rows, tmpfs huge=always" "failed" "mount -t tmpfs -o huge=always failed" "" ""
		fi
		rmdir "$hugedir"
	fi
fi

if has fuse; then
	if [ "$(id -u)" -ne 0 ]; then
		row "FUSE rows" "skipped" "needs root (losetup)" "" ""
	elif run fuse env TARGETS="fuse-loop raw-loop" RUNTIME="$RUNTIME" SIZE="$FUSE_SIZE" ROUNDS="$ROUNDS" \
		WORKLOADS="randread:4k randwrite:4k read:1M write:1M" bench/fuse.sh; then
		table_rows "$OUT/fuse.log" "FUSE + loop," "" "loop on the tmpfs file" ">= 0.4" ">= 0.8"
	else
		row "FUSE rows" "failed" "see $OUT/fuse.log" "" ""
	fi
fi

if has dax; then
	# dax.sh's ROUNDS is uffdwp's rounds per run, not ours: COUNT is.
	dax_env=(COUNT="$ROUNDS" ROUNDS=40)
	[ "$QUICK" = 1 ] && dax_env+=(SIZE=256M PAUSE_SIZES=1 NBD=0 ROUNDS=20)
	if [ "$(id -u)" -ne 0 ]; then
		row "DAX row" "skipped" "needs root" "" ""
	elif run dax env "${dax_env[@]}" bench/dax.sh; then
		l="$OUT/dax.log"
		d=$(awk '$1 == "chunk" && $2 == 4 && $3 == "KiB" { printf "p50 %s µs, p99 %s µs", $4, $5; exit }' "$l")
		# dax.sh lists the raw round trip's p50 and p99 per pair, and the
		# median of the pairs' daxsnap/raw ratios for each.
		p50=$(awk '/raw uffd WP round trip p50/ { sub(/.*p50 /, ""); sub(/ µs, daxsnap.*/, ""); print; exit }' "$l")
		p99s=$(awk '/raw uffd WP round trip p99/ { sub(/.*p99 /, ""); sub(/ µs, daxsnap.*/, ""); print; exit }' "$l")
		r50=$(awk '/daxsnap\/raw p50 at 4 KiB/ { sub(/.*ratios /, ""); sub(/x .*/, ""); print; exit }' "$l")
		r99=$(awk '/daxsnap\/raw p99 at 4 KiB/ { sub(/.*ratios /, ""); sub(/x .*/, ""); print; exit }' "$l")
		p99=$(awk '$1 == "chunk" && $2 == 4 && $3 == "KiB" { print $5; exit }' "$l")
		row "DAX first write after snapshot, 4 KiB fault" "$d" "raw uffd round trip, per pair: p50 $p50 µs, p99 $p99s µs" "p50 ${r50}x, p99 ${r99}x (lower is better)" "p50 <= 1.3x, p99 <= 100 µs$(awk -v x="$p99" 'BEGIN { if (x != "" && x + 0 <= 100) print " (p99 met)"; else print " (p99 not met)" }')"
	else
		row "DAX row" "failed" "see $OUT/dax.log" "" ""
	fi
fi

echo
echo "bench/all.sh: ROUNDS=$ROUNDS (median), QUICK=$QUICK, $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg); logs in $OUT"
echo "Throughput ratios are daxsnap / peer (> 1: daxsnap faster). CPU-bound: the requests per second"
echo "the server's and fio's CPU time per request allow with every CPU busy (bench/nbd.sh, bench/cow.sh)."
echo
{
	echo "what|daxsnap|peer (same run)|ratio|goal"
	echo "---|---|---|---|---"
	cat "$rows"
} | awk -F'|' '{ printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5 }'
