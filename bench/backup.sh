#!/usr/bin/env bash
# Benchmark `daxsnap backup` against its peer, in one run, to one local S3
# server (SeaweedFS's `weed mini` on loopback, as the tests run it):
#   full         `daxsnap backup s0` of a SIZE volume of random data, read
#                over NBD, vs `aws s3 cp` of a file of the same size and
#                bytes to the same server (goal: >= 0.8x its throughput)
#   incremental  `daxsnap backup s1 --since s0` after fio changed PCT % of
#                the volume in random BS runs (never the same block twice):
#                bytes read and sent vs the changed bytes (goal: <= 1.05x,
#                plus the manifest)
#   chain        nine more incrementals s2..s10 the same way, then s10 is
#                restored on a second daemon (its own state and volume) and
#                compared with the snapshot (SHA-256): a full backup plus 10
#                incrementals restores byte-identical elsewhere.
#
# Environment (defaults in brackets):
#   SIZE  volume size [4G]     PCT  percent changed [1]     BS  fio block size [64k]
#   JOBS  daxsnap backup --jobs [4]
# Needs: go, weed ($DAXSNAP_WEED or in PATH; .ci/run builds it), aws
# (apt-get install awscli), fio, nbdcopy (libnbd-bin), python3; about
# 6 x SIZE of disk in /tmp (the volumes are files there: a backup reads
# any volume alike, and a 4 GiB memory region would crowd /dev/shm).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

SIZE=${SIZE:-4G}
PCT=${PCT:-1}
BS=${BS:-64k}
JOBS=${JOBS:-4}
weed=${DAXSNAP_WEED:-$(command -v weed || true)}
[ -n "$weed" ] || die "no weed: set DAXSNAP_WEED or put SeaweedFS's weed in PATH (.ci/run builds it from .ci/weed)"
for tool in go aws fio nbdcopy python3; do
	command -v "$tool" >/dev/null || die "$tool not found: apt-get install awscli fio libnbd-bin python3 (and Go)"
done

bench_scratch backupbench
go build -o "$tmp/daxsnap" ./cmd/daxsnap
bytes=$(numfmt --from=iec "$SIZE")

# weed mini on free loopback ports, no telemetry.
read -r -a p <<<"$(python3 -c 'import socket
ss=[socket.socket() for _ in range(11)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:${p[0]}" AWS_EC2_METADATA_DISABLED=true
mkdir -p "$tmp/weed"
"$weed" mini -dir="$tmp/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
	-s3.port="${p[0]}" -s3.port.grpc="${p[1]}" -master.port="${p[2]}" -master.port.grpc="${p[3]}" \
	-volume.port="${p[4]}" -volume.port.grpc="${p[5]}" -filer.port="${p[6]}" -filer.port.grpc="${p[7]}" \
	-admin.port="${p[8]}" -admin.port.grpc="${p[9]}" -admin.port.legacy=0 -debug.port="${p[10]}" \
	-s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -admin.ui=false -master.telemetry=false \
	>"$tmp/weed.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do
	aws s3 mb s3://bench >/dev/null 2>&1 && break
	sleep 0.5
done
aws s3 ls s3://bench >/dev/null || die "weed mini's S3 gateway did not come up: $(tail -20 "$tmp/weed.log")"

state="$tmp/state"
dx() { "$tmp/daxsnap" --state "$state" "$@"; }
"$tmp/daxsnap" --state "$state" serve --nbd-addr "" --log-level warn >"$tmp/daxsnap.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do [ -S "$state/nbd.sock" ] && break; sleep 0.1; done
[ -S "$state/nbd.sock" ] || die "daxsnap serve did not come up: $(cat "$tmp/daxsnap.log")"
truncate -s "$bytes" "$tmp/vol.img" "$tmp/copy.img"
dx create vol --table "0 $((bytes / 512)) linear $tmp/vol.img 0" >/dev/null
nbd() { echo "nbd+unix:///$1?socket=$state/nbd.sock"; }

echo "filling a $SIZE volume with random bytes (the same file is aws s3 cp's)"
head -c "$bytes" /dev/urandom >"$tmp/data"
nbdcopy "$tmp/data" "$(nbd vol)"
dx snapshot create vol s0 --cow-size "$((bytes * PCT / 100 * 2 + (64 << 20)))" >/dev/null

now() { date +%s.%N; }
t0=$(now)
dx backup s0 --to s3://bench/vols --jobs "$JOBS" --json --no-progress >"$tmp/full.json"
t1=$(now)
aws s3 cp --only-show-errors "$tmp/data" s3://bench/peer/data
t2=$(now)

changed=$((bytes * PCT / 100))
fio --name=change --ioengine=nbd --uri="$(nbd vol)" --rw=randwrite --bs="$BS" --io_size="$changed" \
	--size="$bytes" --randrepeat=0 --refill_buffers --output=/dev/null
dx snapshot create vol s1 --cow-size 64M >/dev/null
dx snapshot diff s0 s1 --json >"$tmp/diff.json"
dx backup s1 --to s3://bench/vols --since s0 --jobs "$JOBS" --json --no-progress >"$tmp/incr.json"

# Nine more generations, each backed up --since the one before, which is
# then removed (a backup schedule keeps one snapshot between runs).
dx snapshot remove s0 >/dev/null
chain_read=0 chain_sent=0 chain_changed=0
for g in $(seq 2 10); do
	fio --name=change --ioengine=nbd --uri="$(nbd vol)" --rw=randwrite --bs="$BS" --io_size="$changed" \
		--size="$bytes" --randrepeat=0 --refill_buffers --output=/dev/null
	dx snapshot create vol "s$g" --cow-size 64M >/dev/null
	dx snapshot diff "s$((g - 1))" "s$g" --json >"$tmp/diff$g.json"
	dx backup "s$g" --to s3://bench/vols --since "s$((g - 1))" --jobs "$JOBS" --json --no-progress >"$tmp/incr$g.json"
	dx snapshot remove "s$((g - 1))" >/dev/null
	read -r r s c < <(python3 -c 'import json,sys; i=json.load(open(sys.argv[1])); d=json.load(open(sys.argv[2])); print(i["read_bytes"], i["sent_bytes"], d["changed"])' "$tmp/incr$g.json" "$tmp/diff$g.json")
	chain_read=$((chain_read + r)) chain_sent=$((chain_sent + s)) chain_changed=$((chain_changed + c))
done

# s10 on another daemon: its own state directory, sockets and volume.
state2="$tmp/state2"
"$tmp/daxsnap" --state "$state2" serve --nbd-addr "" --log-level warn >"$tmp/daxsnap2.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do [ -S "$state2/nbd.sock" ] && break; sleep 0.1; done
[ -S "$state2/nbd.sock" ] || die "the second daxsnap serve did not come up: $(cat "$tmp/daxsnap2.log")"
"$tmp/daxsnap" --state "$state2" create copy --table "0 $((bytes / 512)) linear $tmp/copy.img 0" >/dev/null
t3=$(now)
"$tmp/daxsnap" --state "$state2" restore s3://bench/vols/s10 copy --no-progress >/dev/null
t4=$(now)
same=$(cmp <(nbdcopy "$(nbd s10)" - | sha256sum) <(nbdcopy "nbd+unix:///copy?socket=$state2/nbd.sock" - | sha256sum) >/dev/null && echo identical || echo DIFFERENT)

python3 - "$tmp/full.json" "$tmp/incr.json" "$tmp/diff.json" "$t0" "$t1" "$t2" "$bytes" "$changed" "$same" \
	"$chain_read" "$chain_sent" "$chain_changed" "$t3" "$t4" <<'EOF'
import json, sys
full, incr, diff = (json.load(open(f)) for f in sys.argv[1:4])
t0, t1, t2 = map(float, sys.argv[4:7])
size, written, same = int(sys.argv[7]), int(sys.argv[8]), sys.argv[9]
chain_read, chain_sent, chain_changed = map(int, sys.argv[10:13])
t3, t4 = map(float, sys.argv[13:15])
mib = 1 << 20
changed = diff["changed"]
print(f"volume {size / mib:.0f} MiB; fio wrote {written / mib:.1f} MiB; snapshot diff s0 s1: {changed / mib:.1f} MiB changed")
print(f"{'full backup':28s} {size / mib / (t1 - t0):8.1f} MiB/s  ({t1 - t0:.1f} s, {full['objects']} objects)")
print(f"{'aws s3 cp, same size':28s} {size / mib / (t2 - t1):8.1f} MiB/s  ({t2 - t1:.1f} s)")
print(f"{'full / aws s3 cp':28s} {(t2 - t1) / (t1 - t0):8.2f}x  (goal >= 0.80)")
print(f"{'incremental read':28s} {incr['read_bytes'] / mib:8.1f} MiB = {incr['read_bytes'] / changed:.3f}x changed (goal <= 1.05)")
print(f"{'incremental sent':28s} {incr['sent_bytes'] / mib:8.1f} MiB = {incr['sent_bytes'] / changed:.3f}x changed, plus manifest {incr['manifest_bytes'] / 1024:.0f} KiB (goal <= 1.05)")
print(f"{'s2..s10 read / sent':28s} {chain_read / mib:8.1f} / {chain_sent / mib:.1f} MiB = {chain_read / chain_changed:.3f}x / {chain_sent / chain_changed:.3f}x changed ({chain_changed / mib:.1f} MiB)")
print(f"{'restore of s10, 2nd daemon':28s} {size / mib / (t4 - t3):8.1f} MiB/s  ({t4 - t3:.1f} s); {same} to the snapshot (SHA-256)")
EOF
