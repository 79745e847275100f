#!/usr/bin/env bash
# Benchmark the FUSE export the way it is used: fio on a loop device over
# STATE/fuse/vol (daxsnap serve, a linear volume on a pmem region of SIZE
# on tmpfs), attached with direct I/O as docs/fuse.md says, against fio
# on a loop device over that region's file itself (the kernel alone: loop
# over tmpfs), in one run. Workloads run interleaved across the targets,
# ROUNDS times; the table shows the median and the ratio of the first
# target to each other.
#
# Environment (defaults in brackets):
#   RUNTIME   seconds per fio run [3]         IODEPTH  fio iodepth [16]
#   SIZE      volume size [1G]                ROUNDS   rounds, median shown [1]
#   WORKLOADS rw:bs list ["randread:4k randwrite:4k read:1M write:1M"]
#   TARGETS   which targets ["fuse-loop raw-loop"], of
#             fuse-loop          loop over the FUSE file, --direct-io=on
#             fuse-loop-buffered loop over the FUSE file, plain losetup
#                                (the loop driver then sends one request
#                                at a time: iodepth 1 at the FUSE file)
#             raw-loop           loop over the tmpfs file, plain losetup
#             raw-loop-dio       loop over the tmpfs file, --direct-io=on
#             fuse-file          fio on the FUSE file itself (psync)
#             base-loop          fuse-loop of another daxsnap binary,
#                                BASE_BIN (a before/after in one run)
#             base-loop-buffered fuse-loop-buffered of BASE_BIN
#   PPROF     ADDR: the daemon serves /debug/pprof/ there (DAXSNAP_PPROF)
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
	umount -l "$tmp/state/fuse" "$tmp/base/fuse" 2>/dev/null || true
	bench_cleanup
}
trap cleanup_fuse EXIT

go build -o "$tmp/daxsnap" ./cmd/daxsnap

# serve BIN STATE REGION [PPROF]: a daemon of BIN on STATE exporting
# volume vol, a linear map of a new pmem region REGION of SIZE; sets
# region to its file.
serve() {
	DAXSNAP_PPROF=${4:-} "$1" --state "$2" serve --nbd-addr "" --log-level warn 2>"$2.log" &
	pids+=($!)
	for _ in $(seq 100); do [ -S "$2/daxsnap.sock" ] && break; sleep 0.1; done
	"$1" --state "$2" pmem create "$3" --size "$SIZE" --dir "$shm" >/dev/null
	region=$(find "$shm" -type f -name "$3" | head -1)
	[ -n "$region" ] || die "pmem region $3 not found under $shm"
	local bytes
	bytes=$(stat -c %s "$region")
	"$1" --state "$2" create vol --table "0 $((bytes / 512)) linear $region 0" >/dev/null
	[ -f "$2/fuse/vol" ] || { cat "$2.log" >&2; die "no $2/fuse/vol: the FUSE export did not mount"; }
}
if [[ " $TARGETS " == *" base-loop"* ]]; then
	[ -x "${BASE_BIN:-}" ] || die "target base-loop needs BASE_BIN, a daxsnap binary to compare with"
	serve "$BASE_BIN" "$tmp/base" basebench
fi
state="$tmp/state"
serve "$tmp/daxsnap" "$state" bench "${PPROF:-}"

# path_of target: what fio opens.
declare -A path
for t in $TARGETS; do
	case $t in
	fuse-loop) path[$t]=$(losetup -f --show --direct-io=on "$state/fuse/vol"); loops+=("${path[$t]}") ;;
	fuse-loop-buffered) path[$t]=$(losetup -f --show "$state/fuse/vol"); loops+=("${path[$t]}") ;;
	raw-loop) path[$t]=$(losetup -f --show "$region"); loops+=("${path[$t]}") ;;
	raw-loop-dio) path[$t]=$(losetup -f --show --direct-io=on "$region"); loops+=("${path[$t]}") ;;
	base-loop) path[$t]=$(losetup -f --show --direct-io=on "$tmp/base/fuse/vol"); loops+=("${path[$t]}") ;;
	base-loop-buffered) path[$t]=$(losetup -f --show "$tmp/base/fuse/vol"); loops+=("${path[$t]}") ;;
	fuse-file) path[$t]="$state/fuse/vol" ;;
	*) die "unknown target $t (want fuse-loop, fuse-loop-buffered, raw-loop, raw-loop-dio, base-loop, base-loop-buffered or fuse-file)" ;;
	esac
	case $t in
	*-dio | fuse-loop | base-loop) # losetup falls back to buffered I/O without a word
		[ "$(cat "/sys/block/$(basename "${path[$t]}")/loop/dio")" = 1 ] ||
			echo "warning: $t: the loop driver refused direct I/O on this kernel; measuring buffered" >&2 ;;
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
for t in base-loop base-loop-buffered; do
	if [ -n "${path[$t]:-}" ]; then fio_run "$t" write 1M fill >/dev/null; break; fi
done

echo "fio iodepth=$IODEPTH (libaio, O_DIRECT on the loop devices; $TARGETS) runtime=${RUNTIME}s size=$SIZE rounds=$ROUNDS ($(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg))"
for wl in $WORKLOADS; do
	rw=${wl%%:*} bs=${wl##*:}
	for r in $(seq "$ROUNDS"); do
		for t in "${targets[@]}"; do
			echo "$r $(fio_run "$t" "$rw" "$bs" "$RUNTIME")" >>"$tmp/$wl.$t"
		done
	done
done

bench_table 20 "${targets[@]}"
