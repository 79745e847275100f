#!/usr/bin/env bash
# Benchmark daxsnap's NBD server against its peers with fio's nbd engine
# (libnbd), in one run so the ratios compare like with like:
#   daxsnap   `daxsnap serve` exporting a linear volume on a pmem region
#             (tmpfs) of SIZE; DAXSNAP=nbdserve serves plain memory through
#             bench/nbdserve instead (the NBD server without dm)
#   nbdkit    nbdkit memory 1G
#   qemu-nbd  qemu-nbd on a raw file in tmpfs (/dev/shm)
# Workloads run interleaved across the servers, ROUNDS times; the table
# shows the median. Each server is filled once before measuring so reads
# see data, not holes.
#
# Environment (defaults in brackets):
#   RUNTIME   seconds per fio run [10]        IODEPTH  fio iodepth [16]
#   SIZE      export size [1G]                ROUNDS   rounds, median shown [1]
#   WORKLOADS rw:bs list ["randread:4k randwrite:4k read:1M write:1M"]
#   SERVERS   which servers ["daxsnap nbdkit qemu-nbd"]
#   TRANSPORT unix or tcp [unix]              PORT     first TCP port [10809]
#   DAXSNAP   daemon or nbdserve [daemon]
# Needs: go, fio with the nbd engine, nbdkit, qemu-nbd, nbdinfo
# (apt-get install fio nbdkit qemu-utils libnbd-bin).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

RUNTIME=${RUNTIME:-10}
IODEPTH=${IODEPTH:-16}
SIZE=${SIZE:-1G}
ROUNDS=${ROUNDS:-1}
WORKLOADS=${WORKLOADS:-"randread:4k randwrite:4k read:1M write:1M"}
SERVERS=${SERVERS:-"daxsnap nbdkit qemu-nbd"}
TRANSPORT=${TRANSPORT:-unix}
PORT=${PORT:-10809}

for tool in go fio nbdkit qemu-nbd nbdinfo; do
	command -v "$tool" >/dev/null || die "$tool not found: apt-get install fio nbdkit qemu-utils libnbd-bin (and Go)"
done
fio --enghelp=nbd 2>/dev/null | grep -q uri || die "this fio has no nbd engine (Debian's fio has it; it needs libnbd)"

bench_scratch nbdbench

DAXSNAP=${DAXSNAP:-daemon}
go build -o "$tmp/nbdserve" ./bench/nbdserve
go build -o "$tmp/daxsnap" ./cmd/daxsnap
state="$tmp/state"

# addr/uri for server number $1 named $2; the daemon exports volume "vol",
# on its own socket in the state directory.
addr_of() {
	if [ "$TRANSPORT" = tcp ]; then echo "127.0.0.1:$((PORT + $1))"
	elif [ "$2" = daxsnap ] && [ "$DAXSNAP" = daemon ]; then echo "$state/nbd.sock"
	else echo "$tmp/$2.sock"; fi
}
uri_of() {
	local name=
	[ "$2" = daxsnap ] && [ "$DAXSNAP" = daemon ] && name=vol
	if [ "$TRANSPORT" = tcp ]; then echo "nbd://$(addr_of "$1" "$2")/$name"; else echo "nbd+unix:///$name?socket=$(addr_of "$1" "$2")"; fi
}

# start_daemon addr: daxsnap serve, a pmem region of SIZE, a linear volume on it.
start_daemon() {
	local nbd=""
	[ "$TRANSPORT" = tcp ] && nbd=$1
	"$tmp/daxsnap" --state "$state" serve --nbd-addr "$nbd" --log-level warn 2>"$tmp/daxsnap.log" &
	pids+=($!)
	for _ in $(seq 100); do [ -S "$state/daxsnap.sock" ] && break; sleep 0.1; done
	"$tmp/daxsnap" --state "$state" pmem create bench --size "$SIZE" --dir "$shm" >/dev/null
	local path
	path=$(find "$shm" -type f -name bench | head -1)
	[ -n "$path" ] || die "pmem region not found under $shm"
	local bytes
	bytes=$(stat -c %s "$path")
	"$tmp/daxsnap" --state "$state" create vol --table "0 $((bytes / 512)) linear $path 0" >/dev/null
}

start() { # index name
	local a; a=$(addr_of "$1" "$2")
	case $2 in
	daxsnap)
		if [ "$DAXSNAP" = daemon ]; then
			start_daemon "$a"
			wait_ready "$1" "$2"
			return
		fi
		local listen=$a
		[ "$TRANSPORT" = unix ] && listen="unix:$a"
		"$tmp/nbdserve" -listen "$listen" -size "$SIZE" 2>"$tmp/$2.log" &
		;;
	nbdkit)
		if [ "$TRANSPORT" = tcp ]; then
			nbdkit -f -i 127.0.0.1 -p "${a##*:}" memory "$SIZE" 2>"$tmp/$2.log" &
		else
			nbdkit -f -U "$a" memory "$SIZE" 2>"$tmp/$2.log" &
		fi
		;;
	qemu-nbd)
		truncate -s "$SIZE" "$shm/disk.raw"
		if [ "$TRANSPORT" = tcp ]; then
			qemu-nbd -f raw -t -e 16 -b 127.0.0.1 -p "${a##*:}" "$shm/disk.raw" 2>"$tmp/$2.log" &
		else
			qemu-nbd -f raw -t -e 16 -k "$a" "$shm/disk.raw" 2>"$tmp/$2.log" &
		fi
		;;
	*) die "unknown server $2 (want daxsnap, nbdkit or qemu-nbd)" ;;
	esac
	pids+=($!)
	wait_ready "$1" "$2"
}

wait_ready() { # index name
	for _ in $(seq 100); do
		nbdinfo --size "$(uri_of "$1" "$2")" >/dev/null 2>&1 && return
		sleep 0.1
	done
	cat "$tmp/$2.log" "$tmp/daxsnap.log" >&2 2>/dev/null || true
	die "$2 did not start"
}

# fio_run uri rw bs runtime -> "iops MiB/s"
fio_run() {
	local extra=(--time_based "--runtime=$4")
	[ "$4" = fill ] && extra=()
	fio --name=bench --ioengine=nbd --uri="$1" --rw="$2" --bs="$3" --iodepth="$IODEPTH" \
		--size="$SIZE" "${extra[@]}" --output-format=terse --terse-version=3 2>/dev/null |
		awk -F';' 'NF > 50 { r = $8 + $49; bw = ($7 + $48) / 1024; printf "%d %.0f\n", r, bw }'
}

read -r -a servers <<<"$SERVERS"
for i in "${!servers[@]}"; do
	start "$i" "${servers[$i]}"
	fio_run "$(uri_of "$i" "${servers[$i]}")" write 1M fill >/dev/null # fill
done

echo "fio --ioengine=nbd iodepth=$IODEPTH runtime=${RUNTIME}s size=$SIZE transport=$TRANSPORT rounds=$ROUNDS ($(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg))"
for wl in $WORKLOADS; do
	rw=${wl%%:*} bs=${wl##*:}
	for r in $(seq "$ROUNDS"); do
		for i in "${!servers[@]}"; do
			echo "$r $(fio_run "$(uri_of "$i" "${servers[$i]}")" "$rw" "$bs" "$RUNTIME")" >>"$tmp/$wl.${servers[$i]}"
		done
	done
done

bench_table 12 "${servers[@]}"
