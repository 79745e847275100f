// Package snapshots runs the snapshot verbs on a daemon's devices as LVM
// runs them on the kernel's (lvcreate --snapshot, lvremove, lvconvert
// --merge, lvextend, dmeventd's autoextend): it wraps the snapshot targets
// (package target/snapshot), which know nothing of names and layouts.
//
// For origin ORIGIN, ORIGIN-real takes the origin's table, the origin
// becomes snapshot-origin over it, and each snapshot is a device of its
// own over ORIGIN-real and a COW (layout.go); an offline merge of a DAX
// origin runs on ORIGIN-merge. The manager keeps no records beyond the
// device tables: the verb in flight is recorded on the origin's record
// (a state transition), and Recover settles at start what a stop cut
// short. COW files it creates live in <state>/cow; ones no table or
// record accounts for go to <state>/lost+found (cow.go).
//
// The manager owns its background work: the jobs that finish merges
// (merge.go), the watcher of deferred merges (merge_deferred.go) and the
// autoextend watchers (autoextend.go); Stop ends them. Config.FailStep
// fails a named step of a verb, as a crash there would (tests).
//
// It reaches the daemon only through Host: device transitions, name
// locks, who uses a device, the recall of DAX mappings, and the
// daemon's notes on a device. The caller of a verb holds no lock; the
// verbs take the name locks of every device of the layout, then the
// Host's LockTables, in that order. docs/snapshot.md describes the verbs.
package snapshots
