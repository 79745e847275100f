#!/usr/bin/env bash
# daxsnap send | receive between two daemons (each its own state; volumes
# are files on tmpfs), against nbdcopy of the same snapshot in the same
# run, so the ratios compare like with like:
#   send          daxsnap send s1 > /dev/null      vs nbdcopy s1 -> null:
#   send|receive  send s1 | receive vol (spooled, verified, applied, and
#                 snapshot taken)                   vs nbdcopy s1 -> a volume of the other daemon
#   incremental   send s2 --since s1 | receive, with PCT % of the volume
#                 rewritten between s1 and s2: stream bytes against the
#                 bytes changed
# Environment: SIZE volume size in MiB [256], PCT percent changed [1].
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SIZE=${SIZE:-256} PCT=${PCT:-1}
command -v nbdcopy >/dev/null || die "needs nbdcopy (libnbd-bin)"
bench_scratch daxsnap-sendrecv
go build -o "$tmp/daxsnap" ./cmd/daxsnap
dx() { "$tmp/daxsnap" "$@"; }
for side in a b; do
	mkdir -p "$tmp/$side"
	dx serve --state "$tmp/$side" --fuse "" >"$tmp/$side.log" 2>&1 &
	pids+=($!)
done
for side in a b; do
	for _ in $(seq 100); do [ -S "$tmp/$side/nbd.sock" ] && break; sleep 0.1; done
	truncate -s "${SIZE}M" "$shm/$side.img"
	dx --state "$tmp/$side" create vol --table "0 $((SIZE * 2048)) linear $shm/$side.img 0"
done
truncate -s "${SIZE}M" "$shm/peer.img"
dx --state "$tmp/b" create peer --table "0 $((SIZE * 2048)) linear $shm/peer.img 0"
nbd() { echo "nbd+unix:///$2?socket=$tmp/$1/nbd.sock"; }
head -c "${SIZE}M" /dev/urandom >"$tmp/rand"
nbdcopy "$tmp/rand" "$(nbd a vol)"
dx --state "$tmp/a" snapshot create vol s1 >/dev/null
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
row() { printf "%-34s %6.2f s  %7.1f MiB/s\n" "$1" "$2" "$(echo "$SIZE / $2" | bc -l)"; }
row "daxsnap send s1 > /dev/null" "$(secs dx --state "$tmp/a" send s1 --no-progress)"
row "peer: nbdcopy s1 null:" "$(secs nbdcopy "$(nbd a s1)" null:)"
row "daxsnap send s1 | receive vol" "$(secs sh -c "'$tmp/daxsnap' --state '$tmp/a' send s1 --no-progress | '$tmp/daxsnap' --state '$tmp/b' receive vol --no-progress --spool-dir '$tmp'")"
row "peer: nbdcopy s1 -> b's peer" "$(secs nbdcopy "$(nbd a s1)" "$(nbd b peer)")"
# Incremental: rewrite PCT % of the volume in 64 KiB pieces at random places.
n=$((SIZE * 16 * PCT / 100))
python3 - "$tmp/rand" "$SIZE" "$n" <<'PY'
import os, random, sys
path, size, n = sys.argv[1], int(sys.argv[2]) << 20, int(sys.argv[3])
offs = sorted(random.sample(range(size // 65536), n))
with open(path, "wb") as f:
    for o in offs:
        f.seek(o * 65536); f.write(os.urandom(65536))
    f.truncate(size)
PY
nbdcopy --destination-is-zero "$tmp/rand" "$(nbd a vol)" 2>/dev/null || true
dx --state "$tmp/a" snapshot create vol s2 >/dev/null
dx --state "$tmp/a" send s2 --since s1 --no-progress >"$tmp/incr"
echo "incremental, $PCT % changed ($((n * 64)) KiB): stream $(($(stat -c %s "$tmp/incr") / 1024)) KiB"
printf "%-34s %6.2f s\n" "daxsnap receive vol < incremental" "$(secs sh -c "'$tmp/daxsnap' --state '$tmp/b' receive vol --no-progress --spool-dir '$tmp' < '$tmp/incr'")"
