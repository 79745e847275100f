#!/usr/bin/env bash
# The raw userfaultfd write-protect round trip on tmpfs, the baseline for
# daxsnap's copy-on-write fault path (bench/uffdwp): per-fault latency
# p50..max for each handler (poll, netpoll, busy, adaptive, adaptive-netpoll,
# spinner),
# writer (a thread of the handler's process, or another process that passed
# its userfaultfd over SCM_RIGHTS) and CPU placement (any, split, same). No
# daxsnap logic runs; see the comment of bench/uffdwp/main.go for each kind.
#
# Environment (defaults in brackets):
#   ROUNDS    measured rounds per repetition [40]  PAGES  pages per round [256]
#   REPEAT    repetitions, interleaved across the rows [3]
#   HANDLERS  [poll,netpoll,busy,adaptive,adaptive-netpoll,spinner]
#   WRITERS   [thread,process]
#   CPUS      [any,split,same]                  SPIN   adaptive spin [50us]
# Runs as any user (without privilege the userfaultfd is user-mode-only,
# which changes nothing here); needs go and a tmpfs at /dev/shm.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d /tmp/uffdwp.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/uffdwp" ./bench/uffdwp
"$tmp/uffdwp" -rounds "${ROUNDS:-40}" -repeat "${REPEAT:-3}" -pages "${PAGES:-256}" \
	-handlers "${HANDLERS:-poll,netpoll,busy,adaptive,adaptive-netpoll,spinner}" -writers "${WRITERS:-thread,process}" \
	-cpus "${CPUS:-any,split,same}" -spin "${SPIN:-50us}"
