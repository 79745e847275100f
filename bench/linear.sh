#!/usr/bin/env bash
# Linear target over a tmpfs file vs pread/pwrite on the same file and vs
# memmove on a shared mapping of it, all in one run. Prints MB/s and the
# ratios linear/file (goal >= 0.9) and linear/memmove.
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
	printf "%-14s %10s %10s %10s %12s %14s\n", "workload", "file", "memmove", "linear", "linear/file", "linear/memmove"
	for (w in ws) {
		f = mbs[w, "file"] / n[w, "file"]; m = mbs[w, "memmove"] / n[w, "memmove"]; l = mbs[w, "linear"] / n[w, "linear"]
		printf "%-14s %10.0f %10.0f %10.0f %12.2f %14.2f\n", w, f, m, l, l / f, l / m
	}
	print "(MB/s, mean of the -count runs)"
}'
