#!/usr/bin/env bash
# Benchmark the FUSE export the way it is used: fio on a loop device over
# STATE/fuse/vol (daxsnap serve, a linear volume on a pmem region of SIZE
# on tmpfs) against fio on a loop device over that region's file itself
# (the kernel alone: loop over tmpfs), in one run. Optionally fio straight
# on the FUSE file (psync, one job). Workloads run interleaved across the
# targets, ROUNDS times; the table shows the median and the ratio
# fuse-loop / raw-loop.
#
# Environment (defaults in brackets):
#   RUNTIME   seconds per fio run [3]         IODEPTH  fio iodepth [16]
#   SIZE      volume size [1G]                ROUNDS   rounds, median shown [1]
#   WORKLOADS rw:bs list ["randread:4k randwrite:4k read:1M write:1M"]
#   TARGETS   which targets ["fuse-loop raw-loop"]; add fuse-file for fio
#             on the FUSE file itself
# Needs root (losetup), /dev/fuse, go, fio with libaio
# (apt-get install fio util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

RUNTIME=${RUNTIME:-3}
IODEPTH=${IODEPTH:-16}
SIZE=${SIZE:-1G}
ROUNDS=${ROUNDS:-1}
WORKLOADS=${WORKLOADS:-"randread:4k randwrite:4k read:1M write:1M"}
TARGETS=${TARGETS:-"fuse-loop raw-loop"}

[ "$(id -u)" -eq 0 ] || die "needs root: losetup"
[ -e /dev/fuse ] || die "no /dev/fuse: modprobe fuse"
for tool in go fio losetup; do
	command -v "$tool" >/dev/null || die "$tool not found: apt-get install fio util-linux (and Go)"
done

bench_scratch fusebench
loops=()
cleanup_fuse() {
	for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	umount -l "$tmp/state/fuse" 2>/dev/null || true
	bench_cleanup
}
trap cleanup_fuse EXIT

go build -o "$tmp/daxsnap" ./cmd/daxsnap
state="$tmp/state"
"$tmp/daxsnap" --state "$state" serve --nbd-addr "" --log-level warn 2>"$tmp/daxsnap.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$state/daxsnap.sock" ] && break; sleep 0.1; done
"$tmp/daxsnap" --state "$state" pmem create bench --size "$SIZE" --dir "$shm" >/dev/null
region=$(find "$shm" -type f -name bench | head -1)
[ -n "$region" ] || die "pmem region not found under $shm"
bytes=$(stat -c %s "$region")
"$tmp/daxsnap" --state "$state" create vol --table "0 $((bytes / 512)) linear $region 0" >/dev/null
[ -f "$state/fuse/vol" ] || { cat "$tmp/daxsnap.log" >&2; die "no $state/fuse/vol: the FUSE export did not mount"; }

# path_of target: what fio opens.
declare -A path
for t in $TARGETS; do
	case $t in
	fuse-loop) path[$t]=$(losetup -f --show "$state/fuse/vol"); loops+=("${path[$t]}") ;;
	raw-loop) path[$t]=$(losetup -f --show "$region"); loops+=("${path[$t]}") ;;
	fuse-file) path[$t]="$state/fuse/vol" ;;
	*) die "unknown target $t (want fuse-loop, raw-loop or fuse-file)" ;;
	esac
done

# fio_run target rw bs runtime -> "iops MiB/s"
fio_run() {
	local extra=(--time_based "--runtime=$4")
	[ "$4" = fill ] && extra=()
	local engine=(--ioengine=libaio --direct=1 "--iodepth=$IODEPTH")
	[ "$1" = fuse-file ] && engine=(--ioengine=psync)
	fio --name=bench --filename="${path[$1]}" "${engine[@]}" --rw="$2" --bs="$3" \
		--size="$SIZE" "${extra[@]}" --output-format=terse --terse-version=3 2>/dev/null |
		awk -F';' 'NF > 50 { r = $8 + $49; bw = ($7 + $48) / 1024; printf "%d %.0f\n", r, bw }'
}

read -r -a targets <<<"$TARGETS"
fio_run "${targets[0]}" write 1M fill >/dev/null # fill the region once: reads see data

echo "fio iodepth=$IODEPTH (libaio, O_DIRECT on the loop devices) runtime=${RUNTIME}s size=$SIZE rounds=$ROUNDS ($(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg))"
for wl in $WORKLOADS; do
	rw=${wl%%:*} bs=${wl##*:}
	for r in $(seq "$ROUNDS"); do
		for t in "${targets[@]}"; do
			echo "$r $(fio_run "$t" "$rw" "$bs" "$RUNTIME")" >>"$tmp/$wl.$t"
		done
	done
done

bench_table 20 "${targets[@]}"
