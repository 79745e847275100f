#!/usr/bin/env bash
# Linear target over a tmpfs file vs pread/pwrite on the same file, same run.
# Prints ns/op for both and the throughput ratio linear/file (goal >= 0.9).
set -euo pipefail
cd "$(dirname "$0")"
count=${COUNT:-3}
benchtime=${BENCHTIME:-1s}
go test -run '^$' -bench 'BenchmarkLinear' -benchtime "$benchtime" -count "$count" . |
awk '
/^BenchmarkLinear\// {
	split($1, p, "/"); w = p[2]; peer = p[3]; sub(/-[0-9]+$/, "", peer)
	for (i = 2; i <= NF; i++) if ($(i+1) == "MB/s") { mbs[w, peer] += $i; n[w, peer]++ }
	ws[w] = 1
}
END {
	printf "%-14s %12s %12s %8s\n", "workload", "file MB/s", "linear MB/s", "ratio"
	for (w in ws) {
		f = mbs[w, "file"] / n[w, "file"]; l = mbs[w, "linear"] / n[w, "linear"]
		printf "%-14s %12.0f %12.0f %8.2f\n", w, f, l, l / f
	}
}'
