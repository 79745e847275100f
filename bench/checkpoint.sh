#!/usr/bin/env bash
# The cost of a periodic consistent cut to programs storing into a mapped
# memory volume, in one run, with a Redis BGSAVE peer (needs root and a
# tmpfs at /dev/shm):
#
# For each size in SIZES, for daxsnap built at BASE (before the two-phase
# cut) and at the work tree (after), back to back: `daxsnap serve`, a pmem
# region of that size on tmpfs, a linear volume over it; WRITERS writer
# processes (bench/cutstall) map the whole volume between them, populate
# it, then store 8-byte words continuously at random places of a HOT range
# each, every store timed: QUIET without cuts, then CUTS cuts, one every
# second, each `daxsnap snapshot create vol s --chunk 64k` (suspend's cut,
# snapshot activation, resume) and, outside the timed cut, its removal.
# When the after build has `daxsnap checkpoint` (CHECKPOINTS=0 to skip),
# a third row, ckpt: the after build with a checkpointed volume (image on
# /tmp's file system), the cut `daxsnap checkpoint vol` (waits until
# durable); then the write-back bandwidth of a whole-volume checkpoint
# (a fresh image) against fio --direct=1 --rw=write --bs=1M there.
# Reported: the stores' p99 and the longest store (the writer's stall)
# without and with cuts, the longest cut command, and for the after build
# the daemon's own figures (/metrics): the longest held phase of a cut and
# the longest a cut held faults (to its resume).
#
# Peer: redis-server (installed if missing) with a dataset of the same
# size (DEBUG POPULATE, 1 KiB values), one client SETting in a loop, each
# SET timed, QUIET without, then CUTS BGSAVEs one a second (each waited
# for): the SETs' p99 and longest, latest_fork_usec (largest), and the
# peak PSS of the server and its forked child together.
#
# Environment: SIZES ["1G 4G 16G"]: a size whose volume, COW and 1 GiB of
# room do not fit in the available memory is skipped (and said so);
# WRITERS [4], HOT bytes per writer [16M], QUIET [5s], CUTS [5], NICE
# [-10]: the nice value the daemon and the Redis server start at, so
# every thread of theirs has it (the writers run at 0: the daemon serves
# their faults, as the kernel would in their own time slice; with more
# writers than CPUs at equal priority its fault handling waits for a CPU
# like any of them), BASE
# [the commit before "session: two-phase cut", or before the recovery
# commit that brought it to main, "Recover the unlanded work of issues
# 11-14"], REDIS_CUTS [CUTS] (a
# BGSAVE of 4 GiB takes half a minute here), REDIS=0 to skip the peer,
# DAX=0 to run the peer alone, BUILDS to run some of before, after, ckpt,
# ckpt-cap (ckpt with the copy-on-write buffer's cap set to CAP [80M]:
# `checkpoint enable --buffer`; the default cap, 1 % of the volume, is
# less than the writers' hot ranges below 8 GiB, so they meet
# backpressure). FIRST_APART=1: the ckpt builds take their first
# checkpoint (the whole volume) before the quiet stretch, reported on a
# line of its own, so that the stretch with cuts has the periodic,
# incremental checkpoints only.
#
# Write-back bandwidth (WRITEBACK=0 to skip it, WRITEBACK_ONLY=1 to run it
# alone): bytes of volume data made durable per second of checkpoint
# time, from the cut until the checkpoint is durable and reported
# complete, measured by the engine's benchmark (BenchmarkWriteBack in
# internal/checkpoint: a real device over tmpfs memory, a WB_SIZE [1G]
# volume of random data, 64 KiB chunks, the image in WB_DIR [/var/tmp,
# which must not be tmpfs]) for three checkpoints: first (a new image,
# every chunk, written in place), full (a later one, every chunk dirty:
# journal, commit; its apply into the image runs afterwards) and 25%
# (a later one, a random quarter of the chunks dirty). WB_REPS [3]
# rounds, each: fio --direct=1 --rw=write --bs=1M of WB_SIZE and of a
# quarter of it to WB_DIR, then the three checkpoints. Reported: the
# medians, and each checkpoint's against fio of as many bytes (full and
# first against fio of WB_SIZE, 25% against fio of a quarter).
#
# Restore time (RESTORE=0 to skip it, RESTORE_ONLY=1 to run it alone):
# BenchmarkRestore in internal/daemon, a 1 GiB checkpointed volume whose
# region is deleted, the daemon started again, the image in WB_DIR:
# the eager restore (start to serving), the restore on demand (start to
# a first block read, to a program's first load, to complete), and its
# peers reading the same image with O_DIRECT: fio at the restore's block
# size and reads in flight, and dd; RESTORE_REPS [3] rounds of 3.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

# diskdir: WB_DIR [/var/tmp], refused if tmpfs (the image must be on a disk).
diskdir() {
	local dir=${WB_DIR:-/var/tmp}
	[ "$(stat -f -c %T "$dir")" = tmpfs ] && die "WB_DIR $dir is tmpfs: give a directory on a disk file system"
	echo "$dir"
}

# writeback: the write-back bandwidth table (see above).
writeback() {
	local size dir reps q r fsz
	size=$(numfmt --from=iec "${WB_SIZE:-1G}")
	dir=$(diskdir)
	reps=${WB_REPS:-3}
	q=$((size / 4 / 1048576 * 1048576))
	fsz=$(stat -f -c %T "$dir")
	go test -c -o "$tmp/checkpoint.test" ./internal/checkpoint
	wbdir=$(mktemp -d "$dir/daxsnap-writeback.XXXXXX")
	trap 'bench_cleanup; rm -rf "$wbdir"' EXIT # a failed round leaves WB_SIZE files on the disk otherwise
	# fio_mbs BYTES [--end_fsync=1]
	fio_mbs() {
		fio --name=w --filename="$wbdir/fio.dat" --direct=1 --rw=write --bs=1M --size="$1" ${2:-} --output-format=json 2>/dev/null |
			python3 -c 'import json, sys; s = sys.stdin.read(); print("%.0f" % (json.loads(s[s.index("{"):])["jobs"][0]["write"]["bw_bytes"] / 1e6))'
		rm -f "$wbdir/fio.dat"
	}
	: >"$tmp/wb"
	for r in $(seq "$reps"); do
		local ff fq ffs fqs out first full quarter
		ff=$(fio_mbs "$size")
		fq=$(fio_mbs "$q")
		ffs=$(fio_mbs "$size" --end_fsync=1)
		fqs=$(fio_mbs "$q" --end_fsync=1)
		out=$(cd internal/checkpoint && DAXSNAP_BENCH_DIR="$wbdir" DAXSNAP_BENCH_SIZE="$size" \
			"$tmp/checkpoint.test" -test.run '^$' -test.bench BenchmarkWriteBack -test.benchtime 1x)
		# wbmetric CASE UNIT: the benchmark's figure of that unit.
		wbmetric() { awk -v n="$1" -v u="$2" '$1 ~ n { for (i = 2; i < NF; i++) if ($(i + 1) == u) { print $i; exit } }' <<<"$out"; }
		first=$(wbmetric 'WriteBack/first' MB/s)
		full=$(wbmetric 'WriteBack/full' MB/s)
		quarter=$(wbmetric 'WriteBack/dirty=25%' MB/s)
		echo "round $r: fio $ff MB/s ($((size >> 20)) MiB), $fq MB/s ($((q >> 20)) MiB); with --end_fsync=1 $ffs, $fqs MB/s; checkpoint first $first, full $full, 25% $quarter MB/s" >&2
		echo "$r $ff $fq $first $full $quarter $(wbmetric 'WriteBack/first' x-odirect) $(wbmetric 'WriteBack/full' x-odirect) $(wbmetric 'WriteBack/dirty=25%' x-odirect) $ffs $fqs" >>"$tmp/wb"
	done
	rm -rf "$wbdir"
	local mff mfq mffs mfqs m1 m2 m3
	mff=$(median "$tmp/wb" 2)
	mfq=$(median "$tmp/wb" 3)
	mffs=$(median "$tmp/wb" 10)
	mfqs=$(median "$tmp/wb" 11)
	m1=$(median "$tmp/wb" 4)
	m2=$(median "$tmp/wb" 5)
	m3=$(median "$tmp/wb" 6)
	wbx() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
	echo
	echo "## Write-back bandwidth: $((size >> 20)) MiB volume, 64 KiB chunks, $dir ($fsz), median of $reps rounds"
	printf '%-34s %10s %10s %7s %10s %7s %7s\n' checkpoint MB/s "fio MB/s" x-fio "+fsync" x-fsync x-peer
	printf '%-34s %10s %10s %7s %10s %7s %7s\n' "first (new image, all chunks)" "$m1" "$mff" "$(wbx "$m1" "$mff")" "$mffs" "$(wbx "$m1" "$mffs")" "$(median "$tmp/wb" 7)"
	printf '%-34s %10s %10s %7s %10s %7s %7s\n' "full (every chunk dirty)" "$m2" "$mff" "$(wbx "$m2" "$mff")" "$mffs" "$(wbx "$m2" "$mffs")" "$(median "$tmp/wb" 8)"
	printf '%-34s %10s %10s %7s %10s %7s %7s\n' "25% (a random quarter dirty)" "$m3" "$mfq" "$(wbx "$m3" "$mfq")" "$mfqs" "$(wbx "$m3" "$mfqs")" "$(median "$tmp/wb" 9)"
	echo "MB/s: bytes of volume data made durable per second from the cut until the checkpoint is durable (10^6 bytes)."
	echo "fio: fio --direct=1 --rw=write --bs=1M of as many bytes to a new file in the same directory in the same rounds;"
	echo "x-fio: the medians' ratio. +fsync, x-fsync: the same fio with --end_fsync=1, which makes its bytes durable as"
	echo "a checkpoint must (without it, the new file's block allocations are not on the disk yet). x-peer: the median"
	echo "ratio against the benchmark's own peer, the same bytes written with 1 MiB O_DIRECT writes and fdatasync just"
	echo "before each checkpoint (pairs taken seconds apart: steadier on a shared disk)."
}
# restore: the restore time table (see above).
restore() {
	local dir reps out
	dir=$(diskdir)
	reps=${RESTORE_REPS:-3}
	go test -c -o "$tmp/daemon.test" ./internal/daemon
	out=$(cd internal/daemon && DAXSNAP_BENCH_DIR="$dir" "$tmp/daemon.test" -test.run '^$' -test.bench '^BenchmarkRestore$' \
		-test.benchtime 3x -test.count "$reps")
	echo "$out" >&2
	# rmetric CASE UNIT: that figure of each round of CASE, one a line.
	rmetric() { awk -v n="BenchmarkRestore/$1-" -v u="$2" 'index($1, n) == 1 { for (i = 2; i < NF; i++) if ($(i + 1) == u) print $i }' <<<"$out"; }
	# rmed CASE UNIT [DIV]: the median over the rounds, divided by DIV.
	rmed() { rmetric "$1" "$2" | sort -n | awk -v d="${3:-1}" '{ v[NR] = $1 } END { if (NR) printf "%.0f", v[int((NR + 1) / 2)] / d; else printf "-" }'; }
	local eager lazy fiot ddt
	eager=$(rmed restore ns/op 1e6)
	lazy=$(rmed lazy ns/op 1e6)
	fiot=$(rmed fio ns/op 1e6)
	ddt=$(rmed dd ns/op 1e6)
	rx() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
	echo
	echo "## Restore time: 1 GiB volume, every page written, image in $dir, median of $reps rounds of 3"
	printf '%-58s %8s %8s %8s\n' "" ms x-fio x-dd
	printf '%-58s %8s %8s %8s\n' "eager restore (serve, the default): start to serving" "$eager" "$(rx "$eager" "$fiot")" "$(rx "$eager" "$ddt")"
	printf '%-58s %8s\n' "on demand (serve --restore=lazy): start to a 4 KiB read" "$(rmed lazy read-ms)"
	printf '%-58s %8s\n' "on demand: start, a program's map and a load" "$(rmed lazy map-ms)"
	printf '%-58s %8s %8s %8s\n' "on demand: start to the restore complete" "$lazy" "$(rx "$lazy" "$fiot")" "$(rx "$lazy" "$ddt")"
	printf '%-58s %8s\n' "peer: fio --direct=1 --rw=read at the restore's block size" "$fiot"
	printf '%-58s %8s\n' "peer: dd iflag=direct bs=8M" "$ddt"
	echo "A restore reads the image with 8 MiB O_DIRECT reads, as many in flight as fio has here (BenchmarkRestore in"
	echo "internal/daemon). x-fio, x-dd: the restore's time over the peer's (lower is faster)."
}
SIZES=${SIZES:-"1G 4G 16G"}
WRITERS=${WRITERS:-4}
HOT=${HOT:-16M}
QUIET=${QUIET:-5s}
CUTS=${CUTS:-5}
NICE=${NICE:--10}
REDIS_CUTS=${REDIS_CUTS:-$CUTS}
BASE=${BASE:-$(git log -1 --format=%H --grep='^session: two-phase cut' --grep='^Recover the unlanded work of issues 11-14')^}
bench_scratch cutbench
if [ "${WRITEBACK_ONLY:-0}" = 1 ]; then
	writeback
	exit 0
fi
if [ "${RESTORE_ONLY:-0}" = 1 ]; then
	restore
	exit 0
fi
go build -o "$tmp/cutstall" ./bench/cutstall
go build -o "$tmp/after" ./cmd/daxsnap
mkdir "$tmp/src"
git archive "$BASE" | tar -x -C "$tmp/src"
(cd "$tmp/src" && go build -o "$tmp/before" ./cmd/daxsnap)
echo "before: $(git log -1 --format='%h %s' "$BASE")"
echo "after:  work tree at $(git log -1 --format='%h %s')"

bytes() { numfmt --from=iec "$1"; }
avail() { awk '/MemAvailable/ { printf "%.0f", $2 * 1024 }' /proc/meminfo; }
ms() { awk -v n="$1" 'BEGIN { printf "%.2f", n / 1e6 }'; }
us() { awk -v n="$1" 'BEGIN { printf "%.1f", n / 1e3 }'; }
field() { awk -v k="$2" '{ for (i = 1; i < NF; i++) if ($i == k) print $(i + 1) }' <<<"$1"; }
metric() { awk -v m="$2" '$1 == m { print $2 }' "$1"; }
mib() { awk -v v="${1:-0}" 'BEGIN { printf "%.0f", v / 1048576 }'; }

cow=$((256 << 20)) # 4 writers x 16 MiB hot, copied at most once per snapshot
rows=()
skipped=()
extra=()
for size in $SIZES; do
	need=$(($(bytes "$size") + cow + (1 << 30)))
	if [ "$(avail)" -lt "$need" ]; then
		skipped+=("$size (needs $((need >> 20)) MiB, $(($(avail) >> 20)) MiB available)")
		continue
	fi
	builds="before after"
	if [ "${CHECKPOINTS:-1}" != 0 ] && "$tmp/after" checkpoint --help 2>/dev/null | grep -q enable; then
		builds="$builds ckpt"
	fi
	[ "${DAX:-1}" = 0 ] && builds=""
	builds=${BUILDS:-$builds}
	for build in $builds; do
		state="$shm/state-$build"
		bin="$tmp/$build"
		case $build in ckpt*) bin="$tmp/after" ;; esac
		dx() { "$bin" --state "$state" "$@"; }
		# Started at NICE, not reniced after: renice -p reaches one thread,
		# and the fault handlers run on the others.
		nice -n "$NICE" "$bin" --state "$state" serve --nbd-addr "" --fuse "" --log-level warn >"$tmp/daxsnap-$build.log" 2>&1 &
		daemon=$!
		pids+=("$daemon")
		for _ in $(seq 500); do [ -S "$state/daxsnap.sock" ] && dx version >/dev/null 2>&1 && break; sleep 0.01; done
		dx pmem create mem --size "$size" --dir "$shm" >/dev/null
		path=$(find "$shm" -maxdepth 2 -type f -name mem | head -1)
		dx create vol --table "0 $(($(stat -c %s "$path") / 512)) linear $path 0" >/dev/null
		cut="$bin --state $state snapshot create vol s --chunk 64k --cow-size $cow"
		uncut="$bin --state $state snapshot remove s"
		if [ "${build#ckpt}" != "$build" ]; then
			# The image on the disk file system /tmp is on; the first
			# checkpoint (all of the volume) is the first cut. ckpt-cap:
			# the copy-on-write buffer's cap set to CAP.
			mkdir -p "$tmp/ck"
			capflag=()
			[ "$build" = ckpt-cap ] && capflag=(--buffer "${CAP:-80M}")
			dx checkpoint enable vol --to "$tmp/ck/vol.img" --interval 1h "${capflag[@]}" >/dev/null
			cut="$bin --state $state checkpoint vol"
			uncut=""
		fi
		first=""
		[ "${FIRST_APART:-0}" = 1 ] && [ "${build#ckpt}" != "$build" ] && first=$cut
		echo "## $size, $build: $WRITERS writers, $HOT hot each, $CUTS cuts${first:+, the first checkpoint apart}" >&2
		out=$("$tmp/cutstall" -socket "$state/dax.sock" -device vol -size "$size" -writers "$WRITERS" -hot "$HOT" \
			-quiet "$QUIET" -cuts "$CUTS" -cut "$cut" -uncut "$uncut" -first "$first" -metrics "$state/daxsnap.sock")
		echo "$out" >&2
		curl -s --unix-socket "$state/daxsnap.sock" http://x/metrics >"$tmp/metrics" || true
		q=$(grep '^stretch quiet' <<<"$out")
		c=$(grep '^stretch cuts' <<<"$out")
		# Daemon side, both builds: the mean sweep (before: all of it
		# held), the mean wait of a held fault, and (after only) the
		# longest held phase and hold to the cut's end.
		div() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.2f", a / b * 1e3; else printf "-" }'; }
		sweep=$(div "$(metric "$tmp/metrics" daxsnap_dax_sweep_seconds_total)" "$(metric "$tmp/metrics" daxsnap_dax_sweeps_total)")
		heldn=$(metric "$tmp/metrics" daxsnap_dax_faults_held_total)
		heldavg=$(div "$(metric "$tmp/metrics" daxsnap_dax_faults_held_seconds_total)" "$heldn")
		# Per cut command (cutstall -metrics: the deltas of /metrics over
		# each command), median/longest: the held phase and the hold to
		# the cut's end of the cut itself, and of the removal after it.
		d=$(grep '^daemon' <<<"$out" || true)
		cutd=$(sed -n 's/^daemon cut \(.*\) uncut .*/\1/p' <<<"$d")
		uncutd=$(sed -n 's/^daemon cut .* uncut \(.*\)/\1/p' <<<"$d")
		pair() { [ -n "$1" ] && [ "$1" != none ] && echo "$(ms "$(field "$1" "$2-p50")")/$(ms "$(field "$1" "$2-max")")" || echo -; }
		hold=$(pair "$cutd" hold-phase)
		held=$(pair "$cutd" hold)
		rmheld=$(pair "$uncutd" hold)
		rows+=("$(printf '%-5s %-15s %7s %7s %7s %7s %8s %8s %7s %7s %8s %11s %11s %11s %8s %9s' "$size" "daxsnap-$build" \
			"$(us "$(field "$q" p99)")" "$(us "$(field "$c" p99)")" "$(field "$q" over2ms)" "$(field "$c" over2ms)" \
			"$(ms "$(field "$q" max)")" "$(ms "$(field "$c" max)")" "$(ms "$(field "$q" blocked)")" "$(ms "$(field "$c" blocked)")" "$sweep" "$hold" "$held" "$rmheld" "$heldavg" \
			"$(ms "$(field "$c" cut-max)")")")
		if [ "${build#ckpt}" != "$build" ]; then
			ckpt_written=$(metric "$tmp/metrics" 'daxsnap_checkpoint_written_bytes_total{device="vol"}')
			ckpt_bp=$(metric "$tmp/metrics" 'daxsnap_checkpoint_backpressure_waits_total{device="vol"}')
			ckpt_cap=$(metric "$tmp/metrics" 'daxsnap_checkpoint_buffer_capacity_bytes{device="vol"}')
			# Write-back bandwidth: a fresh image, its first checkpoint
			# writes all of the (populated) volume, against fio writing as
			# much with O_DIRECT and 1 MiB blocks to the same file system.
			dx checkpoint disable vol >/dev/null
			t0=$(date +%s.%N)
			dx checkpoint enable vol --to "$tmp/ck/vol2.img" --interval 1h "${capflag[@]}" >/dev/null
			dx checkpoint vol >/dev/null
			t1=$(date +%s.%N)
			ckbw=$(awk -v b="$(bytes "$size")" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.0f", b / (z - a) / 1e6 }')
			dx checkpoint disable vol >/dev/null
			rm -f "$tmp/ck/"*
			fiobw=$(fio --name=w --filename="$tmp/ck/fio.dat" --direct=1 --rw=write --bs=1M --size="$size" --output-format=json 2>/dev/null |
				python3 -c 'import json, sys; s = sys.stdin.read(); print("%.0f" % (json.loads(s[s.index("{"):])["jobs"][0]["write"]["bw_bytes"] / 1e6))' || echo -)
			rm -f "$tmp/ck/fio.dat"
			f=$(grep '^stretch first' <<<"$out" || true)
			[ -n "$f" ] && extra+=("$size $build: the first checkpoint (the whole volume) before the quiet stretch: $(ms "$(field "$f" cut-max)") ms; stores meanwhile p99 $(us "$(field "$f" p99)") µs, longest $(ms "$(field "$f" max)") ms, blk $(ms "$(field "$f" blocked)") ms")
			extra+=("$size $build: checkpoint write-back of the whole volume (enable + first checkpoint) $ckbw MB/s, fio --direct=1 --rw=write --bs=1M $fiobw MB/s; during the cuts: $(mib "$ckpt_written") MiB written back, COW buffer cap $(mib "$ckpt_cap") MiB, ${ckpt_bp:--} backpressure waits")
		fi
		dx remove vol >/dev/null 2>&1 || true
		kill "$daemon"
		wait "$daemon" 2>/dev/null || true
		rm -rf "$state" "$(memcow_dir "$state")" "$path" "$(dirname "$path")"/mem* 2>/dev/null || true
	done
	rneed=$(($(bytes "$size") * 2 + (1 << 30))) # dataset with its overhead, and the fork's copies
	if [ "${REDIS:-1}" != 0 ] && [ "$(avail)" -lt "$rneed" ]; then
		skipped+=("redis at $size (needs ~$((rneed >> 20)) MiB, $(($(avail) >> 20)) MiB available)")
	elif [ "${REDIS:-1}" != 0 ]; then
		if ! command -v redis-server >/dev/null; then
			apt-get install -y redis-server >&2 || { apt-get update >&2 && apt-get install -y redis-server >&2; }
		fi
		port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
		rm -rf "$tmp/redis" # a dump.rdb of the last size would be loaded at start
		mkdir -p "$tmp/redis"
		nice -n "$NICE" redis-server --port "$port" --bind 127.0.0.1 --dir "$tmp/redis" --save "" --appendonly no \
			--enable-debug-command yes --daemonize no --logfile "$tmp/redis.log" &
		rpid=$!
		pids+=("$rpid")
		for _ in $(seq 500); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.01; done
		keys=$(($(bytes "$size") / 1024))
		echo "## $size, redis: $keys keys of 1 KiB, BGSAVE x $REDIS_CUTS" >&2
		redis-cli -p "$port" debug populate "$keys" key 1024 >/dev/null
		if ! out=$("$tmp/cutstall" -redis "127.0.0.1:$port" -redis-pid "$rpid" -keys "$keys" -quiet "$QUIET" -cuts "$REDIS_CUTS"); then
			cp "$tmp/redis.log" "/tmp/checkpoint-redis-$size.log"
			skipped+=("redis at $size: it failed (its log: /tmp/checkpoint-redis-$size.log)")
			kill "$rpid" 2>/dev/null || true
			wait "$rpid" 2>/dev/null || true
			continue
		fi
		echo "$out" >&2
		q=$(grep '^stretch quiet' <<<"$out")
		c=$(grep '^stretch cuts' <<<"$out")
		r=$(grep '^redis' <<<"$out")
		rows+=("$(printf '%-5s %-15s %7s %7s %7s %7s %8s %8s %7s %7s %8s %11s %11s %11s %8s %9s  fork %s ms, PSS peak %s MiB' "$size" "redis-bgsave" \
			"$(us "$(field "$q" p99)")" "$(us "$(field "$c" p99)")" "$(field "$q" over2ms)" "$(field "$c" over2ms)" \
			"$(ms "$(field "$q" max)")" "$(ms "$(field "$c" max)")" - - - - - - - "$(ms "$(field "$c" cut-max)")" \
			"$(awk -v u="$(field "$r" fork-usec-max)" 'BEGIN { printf "%.2f", u / 1e3 }')" \
			"$(($(field "$r" pss-peak-bytes) >> 20))")")
		redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
		wait "$rpid" 2>/dev/null || true
	fi
done

echo
echo "## Summary: $WRITERS writers, $HOT hot range each (Redis: 1 client), $CUTS cuts 1 s apart; µs and ms"
printf '%-5s %-15s %7s %7s %7s %7s %8s %8s %7s %7s %8s %11s %11s %11s %8s %9s\n' size what p99-q p99-c ">2ms-q" ">2ms-c" max-q max-c blk-q blk-c sweep held-ph hold-end rm-hold-end held-avg cut-cmd
printf '%-5s %-15s %7s %7s %7s %7s %8s %8s %7s %7s %8s %11s %11s %11s %8s %9s\n' "" "" µs µs stores stores ms ms ms ms ms "ms p50/max" "ms p50/max" "ms p50/max" ms ms
for r in "${rows[@]}"; do echo "$r"; done
for s in "${extra[@]}"; do echo "$s"; done
for s in "${skipped[@]}"; do echo "skipped: $s"; done
echo "-q: the quiet stretch, -c: the stretch with cuts. >2ms: stores (SETs) that took over 2 ms. max: the longest, wall time:"
echo "on this machine mostly the wait for a CPU (see the quiet stretch). blk: the longest a writer slept (not on a CPU, not"
echo "waiting for one: held in a fault) within a window of 1024 stores, the writers' view of the stall. Daemon side (/metrics): sweep, the mean cut (before:"
echo "held throughout); per cut command (the deltas of /metrics over each), median/longest: held-ph, its held phase;"
echo "hold-end, how long it held faults until its end (snapshot activation and the origin's resume included); rm-hold-end,"
echo "the same for the removal after it (not timed as the cut); held-avg, the mean wait of a held fault. cut-cmd: the"
echo "longest snapshot create (BGSAVE until done)."
if [ "${WRITEBACK:-1}" != 0 ]; then
	writeback
fi
if [ "${RESTORE:-1}" != 0 ]; then
	restore
fi
