# Shared by the bench/*.sh scripts (source it): die, and scratch
# directories in /tmp and on tmpfs that go away, with every process the
# script started (append their pids to pids), when it exits.

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# bench_scratch NAME: sets tmp and shm (in SHMDIR, a tmpfs: /dev/shm unless
# given), installs the cleanup trap.
bench_scratch() {
	tmp=$(mktemp -d "/tmp/$1.XXXXXX")
	shm=$(mktemp -d "${SHMDIR:-/dev/shm}/$1.XXXXXX")
	pids=()
	trap bench_cleanup EXIT
}

# memcow_dir STATE: where the daemon of state directory STATE (an
# absolute path) puts the COW of a memory origin's snapshot: on /dev/shm,
# named after STATE (snapshots.MemCOWDirIn), so outside tmp and shm.
# Removing STATE leaves it, with the COW files in it.
memcow_dir() { echo "/dev/shm/daxsnap-cow-$(id -u)-$(printf %s "$1" | sha256sum | cut -c1-12)"; }

bench_cleanup() {
	local d
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	# The state directories are tmp, shm or directly in them.
	for d in "$tmp" "$tmp"/* "$shm" "$shm"/*; do
		[ -d "$d" ] && rm -rf "$(memcow_dir "$d")"
	done
	rm -rf "$tmp" "$shm"
}

# cpu_ticks PID: the process's user+system CPU time, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# us_per_op TICKS OPS: TICKS clock ticks of CPU time per request, in µs.
us_per_op() {
	awk -v d="$1" -v hz="$(getconf CLK_TCK)" -v n="$2" 'BEGIN { printf "%.1f", (n > 0 ? d * 1e6 / hz / n : 0) }'
}

# fio_summary: fio's JSON output on stdin -> "IOPS MiB/s fio-µs-per-op
# ops", reads and writes together; fio-µs-per-op is the CPU time fio
# itself spent per request (usr_cpu and sys_cpu are percent of
# job_runtime, in ms), beside which a server's own cost is measured.
fio_summary() {
	python3 -c '
import json, sys
s = sys.stdin.read()
j = json.loads(s[s.index("{"):])["jobs"][0]
r, w = j["read"], j["write"]
ops = r["total_ios"] + w["total_ios"]
us = (j["usr_cpu"] + j["sys_cpu"]) / 100 * j["job_runtime"] * 1000 / max(ops, 1)
print("%.0f %.1f %.1f %d" % (r["iops"] + w["iops"], (r["bw_bytes"] + w["bw_bytes"]) / 2**20, us, ops))'
}

# median FILE COLUMN: the median of a column of numbers.
median() {
	sort -n -k"$2" "$1" | awk -v c="$2" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }'
}

# bench_table WIDTH NAME...: for each of $WORKLOADS, the median IOPS and
# MiB/s of every NAME (files $tmp/WORKLOAD.NAME, lines "round iops mibs"),
# then the first NAME's IOPS over each other's.
bench_table() {
	local w=$1 wl n base
	shift
	printf "%-14s" workload
	for n in "$@"; do printf " %${w}s %9s" "$n IOPS" "MiB/s"; done
	for n in "${@:2}"; do printf " %${w}s" "$1/$n"; done
	echo
	for wl in $WORKLOADS; do
		printf "%-14s" "$wl"
		for n in "$@"; do
			printf " %${w}s %9s" "$(median "$tmp/$wl.$n" 2)" "$(median "$tmp/$wl.$n" 3)"
		done
		base=$(median "$tmp/$wl.$1" 2)
		for n in "${@:2}"; do
			awk -v a="$base" -v b="$(median "$tmp/$wl.$n" 2)" -v w="$w" 'BEGIN { if (b > 0) printf " %*.2f", w, a / b; else printf " %*s", w, "n/a" }'
		done
		echo
	done
}
