#!/usr/bin/env bash
# Benchmark daxsnap's NBD server against its peers with fio's nbd engine
# (libnbd), in one run so the ratios compare like with like:
#   daxsnap   `daxsnap serve` exporting a linear volume on a pmem region
#             (tmpfs) of SIZE; DAXSNAP=nbdserve serves plain memory through
#             bench/nbdserve instead (the NBD server without dm)
#   nbdkit    nbdkit memory 1G
#   qemu-nbd  qemu-nbd on a raw file in tmpfs (/dev/shm)
#   daxsnap-tls, nbdkit-tls
#             the same daxsnap and nbdkit servers on TCP with TLS required
#             (daxsnap serve --tls-creds; nbdkit --tls=require
#             --tls-verify-peer), both with one set of x509 credentials
#             made here (a CA, a server certificate for 127.0.0.1 and a
#             client certificate). fio's nbd engine cannot name a
#             certificate directory (libnbd refuses local files in its
#             URIs), so its TLS clients run with HOME=$tmp/home, where
#             libnbd looks in ~/.pki/libnbd; as root (whose directory
#             is /etc/pki/libnbd) they run as nobody, whom the client
#             certificate's CN names and who owns daxsnap's volume
# Workloads run interleaved across the servers, ROUNDS times; the table
# shows the median, and a second one each server's and fio's CPU time per
# request and the rate the two allow with every CPU busy (CPU-bound).
# Each server is filled once before measuring so reads see data, not
# holes.
#
# Environment (defaults in brackets):
#   RUNTIME   seconds per fio run [10]        IODEPTH  fio iodepth [16]
#   SIZE      export size [1G]                ROUNDS   rounds, median shown [1]
#   WORKLOADS rw:bs list ["randread:4k randwrite:4k read:1M write:1M"]
#   SERVERS   which servers ["daxsnap nbdkit qemu-nbd daxsnap-tls nbdkit-tls"]
#   TRANSPORT unix or tcp [unix]              PORT     first TCP port [10809]
#   DAXSNAP   daemon or nbdserve [daemon]
# With TRANSPORT=tcp, daxsnap serves plain TCP with --nbd-insecure, whose
# anonymous clients need the volume's mode to allow them (0666).
# TLS-PSK is not compared: daxsnap's TLS is Go's crypto/tls, which has none.
# Needs: go, fio with the nbd engine, nbdkit, qemu-nbd, nbdinfo, openssl
# (apt-get install fio nbdkit qemu-utils libnbd-bin openssl).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

RUNTIME=${RUNTIME:-10}
IODEPTH=${IODEPTH:-16}
SIZE=${SIZE:-1G}
ROUNDS=${ROUNDS:-1}
WORKLOADS=${WORKLOADS:-"randread:4k randwrite:4k read:1M write:1M"}
SERVERS=${SERVERS:-"daxsnap nbdkit qemu-nbd daxsnap-tls nbdkit-tls"}
TRANSPORT=${TRANSPORT:-unix}
PORT=${PORT:-10809}

for tool in go fio nbdkit qemu-nbd nbdinfo openssl; do
	command -v "$tool" >/dev/null || die "$tool not found: apt-get install fio nbdkit qemu-utils libnbd-bin openssl (and Go)"
done
fio --enghelp=nbd 2>/dev/null | grep -q uri || die "this fio has no nbd engine (Debian's fio has it; it needs libnbd)"

bench_scratch nbdbench

DAXSNAP=${DAXSNAP:-daemon}
go build -o "$tmp/nbdserve" ./bench/nbdserve
go build -o "$tmp/daxsnap" ./cmd/daxsnap
state="$tmp/state"

# make_pki: x509 credentials laid out as qemu-nbd, nbdkit and daxsnap
# --tls-creds read them ($pki/server) and as libnbd looks for them in a
# home directory ($tmp/home/.pki/libnbd), for the user tls_user.
pki="$tmp/pki"
tls_user=$(id -un)
tls_client=(env HOME="$tmp/home")
if [ "$(id -u)" -eq 0 ]; then
	tls_user=nobody
	tls_client=(setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME="$tmp/home")
fi
make_pki() {
	local client="$tmp/home/.pki/libnbd"
	mkdir -p "$pki/server" "$client"
	local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
	openssl req -x509 "${ec[@]}" -keyout "$pki/ca-key.pem" -out "$pki/ca-cert.pem" -days 2 -subj "/CN=bench CA" 2>/dev/null
	sign() { # dir prefix subject extensions
		openssl req "${ec[@]}" -keyout "$1/$2-key.pem" -out "$pki/$2.csr" -subj "$3" 2>/dev/null
		openssl x509 -req -in "$pki/$2.csr" -CA "$pki/ca-cert.pem" -CAkey "$pki/ca-key.pem" -CAcreateserial \
			-days 2 -out "$1/$2-cert.pem" -extfile <(printf '%s\n' "$4") 2>/dev/null
		cp "$pki/ca-cert.pem" "$1/"
	}
	sign "$pki/server" server "/CN=localhost" "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
	sign "$client" client "/CN=$tls_user" "extendedKeyUsage=clientAuth"
	chmod 711 "$tmp"
	chown -R "$tls_user" "$tmp/home"
}

# as_client NAME CMD...: run a client of server NAME (TLS ones as tls_user).
as_client() {
	local n=$1
	shift
	if tls_server "$n"; then "${tls_client[@]}" "$@"; else "$@"; fi
}

tls_server() { case $1 in *-tls) return 0 ;; esac; return 1; }

# addr/uri for server number $1 named $2; the daemon exports volume "vol",
# on its own socket in the state directory.
addr_of() {
	if [ "$TRANSPORT" = tcp ] || tls_server "$2"; then echo "127.0.0.1:$((PORT + $1))"
	elif [ "$2" = daxsnap ] && [ "$DAXSNAP" = daemon ]; then echo "$state/nbd.sock"
	else echo "$tmp/$2.sock"; fi
}
uri_of() {
	local name=
	case $2 in daxsnap | daxsnap-tls) [ "$DAXSNAP" = daemon ] && name=vol ;; esac
	if tls_server "$2"; then echo "nbds://$(addr_of "$1" "$2")/$name"
	elif [ "$TRANSPORT" = tcp ]; then echo "nbd://$(addr_of "$1" "$2")/$name"
	else echo "nbd+unix:///$name?socket=$(addr_of "$1" "$2")"; fi
}

# start_daemon state region serve-args...: daxsnap serve, a pmem region of
# SIZE, a linear volume "vol" on it.
start_daemon() {
	local st=$1 region=$2 owner=(--mode 0600)
	shift 2
	case " $* " in
	*" --nbd-insecure "*) owner=(--mode 0666) ;; # anonymous clients
	*" --tls-creds "*) owner=(--uid "$(id -u "$tls_user")") ;;
	esac
	"$tmp/daxsnap" --state "$st" serve "$@" --log-level warn 2>>"$tmp/daxsnap.log" &
	pids+=($!)
	for _ in $(seq 100); do [ -S "$st/daxsnap.sock" ] && break; sleep 0.1; done
	"$tmp/daxsnap" --state "$st" pmem create "$region" --size "$SIZE" --dir "$shm" >/dev/null
	local path
	path=$(find "$shm" -type f -name "$region" | head -1)
	[ -n "$path" ] || die "pmem region $region not found under $shm"
	local bytes
	bytes=$(stat -c %s "$path")
	"$tmp/daxsnap" --state "$st" create vol "${owner[@]}" --table "0 $((bytes / 512)) linear $path 0" >/dev/null
}

start() { # index name
	local a; a=$(addr_of "$1" "$2")
	case $2 in
	daxsnap)
		if [ "$DAXSNAP" = daemon ]; then
			if [ "$TRANSPORT" = tcp ]; then
				start_daemon "$state" bench --nbd-addr "$a" --nbd-insecure
			else
				start_daemon "$state" bench
			fi
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
	daxsnap-tls)
		[ "$DAXSNAP" = daemon ] || die "daxsnap-tls needs DAXSNAP=daemon (bench/nbdserve has no TLS)"
		start_daemon "$tmp/state-tls" benchtls --nbd-addr "$a" --tls-creds "$pki/server" --no-nbd-socket
		wait_ready "$1" "$2"
		return
		;;
	nbdkit-tls)
		nbdkit -f --tls=require --tls-certificates="$pki/server" --tls-verify-peer \
			-i 127.0.0.1 -p "${a##*:}" memory "$SIZE" 2>"$tmp/$2.log" &
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
		as_client "$2" nbdinfo --size "$(uri_of "$1" "$2")" >/dev/null 2>&1 && return
		sleep 0.1
	done
	cat "$tmp/$2.log" "$tmp/daxsnap.log" >&2 2>/dev/null || true
	die "$2 did not start"
}

# fio_run server uri rw bs runtime -> "iops MiB/s fio-CPU-µs-per-op ops"
fio_run() {
	local n=$1
	shift
	local extra=(--time_based "--runtime=$4")
	[ "$4" = fill ] && extra=()
	as_client "$n" fio --name=bench --ioengine=nbd --uri="$1" --rw="$2" --bs="$3" --iodepth="$IODEPTH" \
		--size="$SIZE" "${extra[@]}" --output-format=json 2>/dev/null | fio_summary
}

read -r -a servers <<<"$SERVERS"
case " $SERVERS " in *-tls" "*) make_pki ;; esac
spid=()
for i in "${!servers[@]}"; do
	start "$i" "${servers[$i]}"
	spid[i]=${pids[-1]}
	fio_run "${servers[$i]}" "$(uri_of "$i" "${servers[$i]}")" write 1M fill >/dev/null # fill
done

echo "fio --ioengine=nbd iodepth=$IODEPTH runtime=${RUNTIME}s size=$SIZE transport=$TRANSPORT rounds=$ROUNDS ($(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg))"
for wl in $WORKLOADS; do
	rw=${wl%%:*} bs=${wl##*:}
	for r in $(seq "$ROUNDS"); do
		for i in "${!servers[@]}"; do
			t0=$(cpu_ticks "${spid[i]}")
			res=$(fio_run "${servers[$i]}" "$(uri_of "$i" "${servers[$i]}")" "$rw" "$bs" "$RUNTIME")
			t1=$(cpu_ticks "${spid[i]}")
			# round iops MiB/s fio-µs/op ops server-µs/op
			echo "$r $res $(us_per_op $((t1 - t0)) "${res##* }")" >>"$tmp/$wl.${servers[$i]}"
		done
	done
done

bench_table 16 "${servers[@]}"

# The CPU time per request of each server (user + system of its process
# over the fio run) and of fio itself, and the requests per second the two
# allow with every CPU busy: on two CPUs fio's own cost bounds the rate
# whatever the server saves.
echo
printf "%-4s %-14s %-12s %14s %12s %12s\n" "" workload server "server us/op" "fio us/op" "CPU-bound"
for wl in $WORKLOADS; do
	for n in "${servers[@]}"; do
		awk -v wl="$wl" -v n="$n" -v c="$(nproc)" -v srv="$(median "$tmp/$wl.$n" 6)" -v fio="$(median "$tmp/$wl.$n" 4)" \
			'BEGIN { printf "cpu  %-14s %-12s %14.1f %12.1f %12.0f\n", wl, n, srv, fio, (srv + fio > 0 ? c * 1e6 / (srv + fio) : 0) }'
	done
done
