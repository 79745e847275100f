// Command daxsnap is the daxsnap daemon (`daxsnap serve`) and its
// dmsetup-like client: create, load, suspend, resume, info, table,
// status, ... against the daemon's control socket, plus `pmem` for memory
// regions, `snapshot` for LVM-style snapshots, `table check` and
// `cow inspect` for offline checks, and `demo`.
package main

import "os"

// version is the release, set with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
