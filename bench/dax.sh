#!/usr/bin/env bash
# DAX mappings after a snapshot: per-fault latency of daxsnap's copy-on-write
# fault path (internal/session BenchmarkFirstWriteAfterSnapshot: a client
# process stores once into every chunk of a mapped 32 MiB snapshot-origin
# volume right after a snapshot, at chunk sizes 4 KiB, 64 KiB, 2 MiB) next to
# the raw userfaultfd write-protect round trip measured in the same run
# (bench/uffdwp, adaptive handler, writer in another process), and the
# ratio of the two p50s at 4 KiB.
#
# Environment: COUNT benchmark repetitions [3], BENCHTIME [10x], ROUNDS
# uffdwp rounds [40]. Needs root (userfaultfd on another process's memory)
# and a tmpfs at /dev/shm.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d /tmp/daxbench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/uffdwp" ./bench/uffdwp
go test -c -o "$tmp/session.test" ./internal/session
"$tmp/uffdwp" -handlers adaptive -writers process -cpus any -rounds "${ROUNDS:-40}" -repeat 1 | tee "$tmp/raw"
(cd internal/session && "$tmp/session.test" -test.run '^$' -test.bench FirstWriteAfterSnapshot \
	-test.benchtime "${BENCHTIME:-10x}" -test.count "${COUNT:-3}") | tee "$tmp/dax"
raw=$(awk '$1 == "adaptive" && $2 == "process" {print $4}' "$tmp/raw")
dax=$(awk '/chunk=4KiB/ {for (i = 1; i <= NF; i++) if ($(i+1) == "p50-µs/fault") {s += $i; n++}} END {if (n) printf "%.1f", s / n}' "$tmp/dax")
echo "# p50 per 4 KiB fault: raw round trip ${raw} µs, daxsnap ${dax} µs: ratio $(awk -v a="$dax" -v b="$raw" 'BEGIN {printf "%.2f", a / b}')x (goal <= 1.3x)"
