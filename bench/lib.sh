# Shared by the bench/*.sh scripts (source it): die, and scratch
# directories in /tmp and on tmpfs that go away, with every process the
# script started (append their pids to pids), when it exits.

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# bench_scratch NAME: sets tmp and shm, installs the cleanup trap.
bench_scratch() {
	tmp=$(mktemp -d "/tmp/$1.XXXXXX")
	shm=$(mktemp -d "/dev/shm/$1.XXXXXX")
	pids=()
	trap bench_cleanup EXIT
}

bench_cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp" "$shm"
}
