#!/usr/bin/env bash
# First writes after a snapshot, over NBD with fio's nbd engine (libnbd),
# against daxsnap and its peers in the same run, so the ratios compare like
# with like:
#   daxsnap    `daxsnap serve`; origin `vol` (a file on tmpfs) with one
#              snapshot taken by `daxsnap snapshot create` (COW on the
#              origin's tmpfs, SHMDIR, with `serve --cow-dir`; by default
#              the daemon puts it on /dev/shm):
#              every first write to a chunk copies it into the COW and
#              commits the exception before it proceeds. Row daxsnap-snap
#              writes the snapshot device instead (a first write remaps the
#              chunk into the COW). Row daxsnap-diskcow is daxsnap with the
#              COW file on disk (DISKDIR) instead, the placement question of
#              docs/decisions.md ("Without serve --cow-dir, the COW of a
#              snapshot of a memory origin goes on tmpfs").
#   nbdkit     nbdkit --filter=cow file base.raw (overlay in tmpfs)
#   qemu-nbd   qemu-nbd on overlay.qcow2 (qemu-img create -f qcow2 -b base.raw)
# Each workload writes every block of the export once (fio's random map),
# so every write is a first write after the snapshot; each server gets a
# fresh snapshot/overlay before each workload. Block size for COW is CHUNK
# everywhere (daxsnap --chunk, nbdkit cow-block-size, qcow2 cluster_size).
#
# Then daxsnap's origin first-write cost with 1, 4 and 16 snapshots (fio
# randwrite 4k on the origin after taking N snapshots): the persistent
# format keeps one exception list per snapshot, so a first write copies the
# chunk once per snapshot, as the kernel's dm-snapshot does.
#
# The table shows each server's CPU time per write too (user + system of
# its process, over the fio run): on a shared machine, where IOPS swing
# with the other load, it is the steadier figure. Beside it, fio's own CPU
# time per write, and the writes per second the two allow when they keep
# every CPU busy (CPU-bound): on two CPUs a client that costs as much as
# the server caps the rate whatever the server saves.
#
# Environment (defaults in brackets):
#   SIZE     export size, all written per workload [256M]
#   NSIZE    origin size for the N-snapshot runs [64M]
#   NSNAPS   snapshot counts ["1 4 16"]; none skips this part
#   CHUNK    COW block size [4k]            IODEPTH  fio iodepth [16]
#   WORKLOADS rw:bs list ["randwrite:4k write:1M"]
#   SERVERS  ["daxsnap daxsnap-snap daxsnap-diskcow nbdkit qemu-nbd"]
#   DISKDIR  a directory on disk for daxsnap-diskcow's COW [/var/tmp]
#   SHMDIR   the tmpfs for the images, overlays and daxsnap's COWs
#            [/dev/shm]; all.sh's cowhuge part gives one mounted huge=always
#   ROUNDS   rounds, servers interleaved in each; medians shown [3]
# Needs: go, fio with the nbd engine, nbdkit, qemu-nbd, qemu-img, python3
# (apt-get install fio nbdkit qemu-utils python3), and room in SHMDIR for
# about 3 x SIZE + 16 x NSIZE.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

SIZE=${SIZE:-256M}
NSIZE=${NSIZE:-64M}
NSNAPS=${NSNAPS:-"1 4 16"}
CHUNK=${CHUNK:-4k}
IODEPTH=${IODEPTH:-16}
WORKLOADS=${WORKLOADS:-"randwrite:4k write:1M"}
SERVERS=${SERVERS:-"daxsnap daxsnap-snap daxsnap-diskcow nbdkit qemu-nbd"}
DISKDIR=${DISKDIR:-/var/tmp}
ROUNDS=${ROUNDS:-3}

for tool in go fio nbdkit qemu-nbd qemu-img python3; do
	command -v "$tool" >/dev/null || die "$tool not found: apt-get install fio nbdkit qemu-utils python3 (and Go)"
done
fio --enghelp=nbd 2>/dev/null | grep -q uri || die "this fio has no nbd engine (Debian's fio has it; it needs libnbd)"

bytes() { # 256M -> bytes
	python3 -c 'import sys; s=sys.argv[1].upper(); m={"K":1<<10,"M":1<<20,"G":1<<30}; print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))' "$1"
}
size_b=$(bytes "$SIZE")
nsize_b=$(bytes "$NSIZE")
chunk_b=$(bytes "$CHUNK")

bench_scratch cowbench

go build -o "$tmp/daxsnap" ./cmd/daxsnap
dx() { "$tmp/daxsnap" --state "$shm/state" "$@"; }

echo "base image: $SIZE of random data in tmpfs" >&2
dd if=/dev/urandom of="$shm/base.raw" bs=1M count=$((size_b >> 20)) status=none

# fio_run URI RW BS SIZE -> "iops MiB/s fio-CPU-µs-per-write writes"
fio_run() {
	fio --name=cow --ioengine=nbd --uri="$1" --rw="$2" --bs="$3" --size="$4" --iodepth="$IODEPTH" \
		--randrepeat=0 --output-format=json 2>"$tmp/fio.err" >"$tmp/fio.json" ||
		{ cat "$tmp/fio.err" >&2; die "fio failed on $1"; }
	fio_summary <"$tmp/fio.json" || die "no fio result for $1: $(cat "$tmp/fio.json" "$tmp/fio.err")"
}

# server_pid SERVER: the process serving SERVER's URI.
server_pid() {
	case $1 in
	daxsnap*) echo "$daxsnap_pid" ;;
	nbdkit) echo "$nbdkit_pid" ;;
	qemu-nbd) echo "$qemu_pid" ;;
	esac
}

wait_socket() { # path
	for _ in $(seq 500); do [ -S "$1" ] && return 0; sleep 0.01; done
	die "no socket at $1"
}

start_daxsnap() {
	"$tmp/daxsnap" --state "$shm/state" serve --nbd-addr "" --cow-dir "$shm/cows" --log-level warn >"$tmp/daxsnap.log" 2>&1 &
	daxsnap_pid=$!
	pids+=($!)
	wait_socket "$shm/state/daxsnap.sock"
	for _ in $(seq 500); do dx version >/dev/null 2>&1 && return 0; sleep 0.01; done
	die "daxsnap serve did not come up: $(cat "$tmp/daxsnap.log")"
}

# prepare SERVER: a fresh snapshot/overlay; sets URI (not a subshell: it
# starts servers whose pids the cleanup needs).
prepare() {
	case $1 in
	daxsnap | daxsnap-snap | daxsnap-diskcow)
		dx snapshot remove s >/dev/null 2>&1 || true
		dx remove vol >/dev/null 2>&1 || true
		rm -f "$shm/vol.raw" "$diskcow"
		cp "$shm/base.raw" "$shm/vol.raw"
		dx create vol --table "0 $((size_b / 512)) linear $shm/vol.raw 0"
		local cow=(--cow-size $((size_b + size_b / 64 + 4 * chunk_b)))
		if [ "$1" = daxsnap-diskcow ]; then
			truncate -s $((size_b + size_b / 64 + 4 * chunk_b)) "$diskcow"
			cow=(--cow "$diskcow")
		fi
		dx snapshot create vol s --chunk "$CHUNK" "${cow[@]}" >/dev/null
		local dev=vol
		[ "$1" = daxsnap-snap ] && dev=s
		URI="nbd+unix:///$dev?socket=$shm/state/nbd.sock"
		;;
	nbdkit)
		[ -n "${nbdkit_pid:-}" ] && { kill "$nbdkit_pid"; wait "$nbdkit_pid" 2>/dev/null || true; }
		rm -f "$tmp/nbdkit.sock"
		TMPDIR=$shm nbdkit -f -U "$tmp/nbdkit.sock" --filter=cow file "$shm/base.raw" cow-block-size="$chunk_b" >"$tmp/nbdkit.log" 2>&1 &
		nbdkit_pid=$!
		pids+=($!)
		wait_socket "$tmp/nbdkit.sock"
		URI="nbd+unix:///?socket=$tmp/nbdkit.sock"
		;;
	qemu-nbd)
		[ -n "${qemu_pid:-}" ] && { kill "$qemu_pid"; wait "$qemu_pid" 2>/dev/null || true; }
		rm -f "$tmp/qemu.sock" "$shm/overlay.qcow2"
		qemu-img create -q -f qcow2 -o cluster_size="$chunk_b" -b "$shm/base.raw" -F raw "$shm/overlay.qcow2"
		qemu-nbd -f qcow2 -t -e 16 -k "$tmp/qemu.sock" --cache=writeback --aio=threads "$shm/overlay.qcow2" >"$tmp/qemu.log" 2>&1 &
		qemu_pid=$!
		pids+=($!)
		wait_socket "$tmp/qemu.sock"
		URI="nbd+unix:///?socket=$tmp/qemu.sock"
		;;
	esac
}

case " $SERVERS " in *" daxsnap-diskcow "*)
	[ "$(stat -f -c %T "$DISKDIR")" != tmpfs ] || die "DISKDIR=$DISKDIR is tmpfs: give a directory on disk for daxsnap-diskcow"
	diskdir=$(mktemp -d "$DISKDIR/cowbench.XXXXXX")
	trap 'bench_cleanup; rm -rf "$diskdir"' EXIT
	;;
esac
diskcow=${diskdir:-/nonexistent}/s.cow
mkdir "$shm/cows"
start_daxsnap
echo
echo "First writes after a snapshot: $SIZE written once per workload, COW block $CHUNK, iodepth $IODEPTH, median of $ROUNDS round(s)"
: >"$tmp/results"
for round in $(seq "$ROUNDS"); do
	for wl in $WORKLOADS; do
		rw=${wl%%:*} bs=${wl##*:}
		for srv in $SERVERS; do
			prepare "$srv"
			spid=$(server_pid "$srv")
			t0=$(cpu_ticks "$spid")
			res=$(fio_run "$URI" "$rw" "$bs" "$SIZE")
			t1=$(cpu_ticks "$spid")
			# the server's CPU time per write, in µs
			echo "$wl $srv $res $(us_per_op $((t1 - t0)) "${res##* }")" >>"$tmp/results"
		done
	done
done
python3 - "$tmp/results" <<'PY'
import os, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    wl, srv, iops, mibs, fio, _, cpu = line.split()
    rows.setdefault((wl, srv), []).append((float(iops), float(mibs), float(cpu), float(fio)))
med = {k: tuple(statistics.median(r[j] for r in v) for j in range(4)) for k, v in rows.items()}
ncpu = os.cpu_count()
print("%-12s %-14s %10s %10s %12s %12s %12s" % ("workload", "server", "IOPS", "MiB/s", "CPU us/write", "fio us/write", "CPU-bound"))
for (wl, srv), (i, m, c, f) in med.items():
    # The writes per second if the server and fio kept every CPU busy
    # and nothing else ran: how far the client's own cost lets it go.
    bound = ncpu * 1e6 / (c + f) if c + f > 0 else 0
    print("%-12s %-14s %10.0f %10.1f %12.1f %12.1f %12.0f" % (wl, srv, i, m, c, f, bound))
print("\nRatios (daxsnap origin / peer; > 1 means daxsnap is faster):")
for (wl, srv), (i, _, _, _) in med.items():
    if srv in ("nbdkit", "qemu-nbd", "daxsnap-diskcow") and (wl, "daxsnap") in med:
        print("  %-12s vs %-9s %.2f" % (wl, srv, med[(wl, "daxsnap")][0] / i))
PY

[ "$NSNAPS" = none ] && exit 0
echo
echo "daxsnap origin first writes (randwrite 4k over $NSIZE) with N snapshots, COW block $CHUNK, median of $ROUNDS round(s):"
: >"$tmp/nresults"
for round in $(seq "$ROUNDS"); do
	for n in 0 $NSNAPS; do
		for s in $(dx snapshot list --json | python3 -c 'import json,sys; [print(s["name"]) for s in json.load(sys.stdin)]'); do
			dx snapshot remove "$s"
		done
		dx remove nvol >/dev/null 2>&1 || true
		dd if=/dev/urandom of="$shm/nvol.raw" bs=1M count=$((nsize_b >> 20)) status=none
		dx create nvol --table "0 $((nsize_b / 512)) linear $shm/nvol.raw 0"
		for k in $(seq "$n"); do
			dx snapshot create nvol "n$k" --chunk "$CHUNK" --cow-size $((nsize_b + nsize_b / 64 + 4 * chunk_b)) >/dev/null
		done
		echo "$n $(fio_run "nbd+unix:///nvol?socket=$shm/state/nbd.sock" randwrite 4k "$NSIZE")" >>"$tmp/nresults"
	done
done
python3 - "$tmp/nresults" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    n, iops, mibs = line.split()[:3]
    rows.setdefault(int(n), []).append((float(iops), float(mibs)))
base = statistics.median(i for i, _ in rows[0])
print("%-10s %10s %10s %16s %18s" % ("snapshots", "IOPS", "MiB/s", "time/write vs 0", "per snapshot vs 1"))
one = statistics.median(i for i, _ in rows[min(k for k in rows if k > 0)]) if len(rows) > 1 else base
for n in sorted(rows):
    i = statistics.median(x for x, _ in rows[n])
    m = statistics.median(y for _, y in rows[n])
    per = "" if n == 0 else "%.2fx" % ((one / i) / n)
    print("%-10d %10.0f %10.1f %15.1fx %18s" % (n, i, m, base / i, per))
PY
