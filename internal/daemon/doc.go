// Package daemon is `daxsnap serve`: it wires the target registry, the
// device pool, the mapped devices, the persistent state, the control API
// and the exports together, and owns their lifecycle.
//
// Start opens the state directory (refusing a second daemon on it),
// rebuilds every memory region and mapped device from the state file in
// dependency order (a device whose table names /dev/mapper/X after X), and
// listens on <state>/daxsnap.sock. A device whose recorded table no longer
// loads comes back with an `error` table of the recorded size and a note
// saying why; it never keeps the others from coming back.
//
// Every change to a device or region is a state transition (package
// state): the record says what is in flight, the dm operation runs, and
// the record is rewritten from what the device really is afterwards.
//
// The snapshot verbs are package snapshots', which the daemon hands what
// it needs through snapshots.Host (snapshots.go): device transitions and
// records, name locks, device users, the recall of DAX mappings and its
// notes. At start the daemon restores the devices, then has the manager
// settle the snapshot verbs a stop cut short.
//
// Locking: a per-name lock serialises operations on one device (and
// orders their records); graphMu serialises the loads, which may stack a
// table on a device, with renames, which rewrite the records of the
// tables stacked on the renamed device; the regions' lock (pmem's
// LockTables) keeps region creation and removal from racing table loads.
// Order: name lock, graphMu, the regions' lock. Block I/O takes
// none of them. Tables over /dev/mapper/NAME are dm's: it opens the
// device, keeps references acyclic, and says which devices stack on
// which (dm/stack.go).
package daemon
