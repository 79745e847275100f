// Package snapshot implements the snapshot-origin, snapshot and
// snapshot-merge targets, like the kernel's dm-snap.c: one package, three
// target types, sharing the state of each COW device.
//
// # Model
//
// A snapshot keeps, in an exception store on its COW device, the original
// contents of every origin chunk written since the snapshot was taken.
// Its state (the store and the in-memory exception table) is shared by
// every target that names the same COW device, so a reloaded snapshot
// table or a snapshot-merge table takes it over (the kernel's handover),
// and it registers with its origin by the origin device's identity, so an
// origin target finds every snapshot of its device whichever mapped
// device holds it, in any order of activation.
//
// Copy-before-write (cowState.copyOut) is the one function every origin
// write runs before it reaches the origin: block writes through
// snapshot-origin and snapshot-merge, and the direct-access fault path
// through dm.Device.PrepareWrite. For each active, valid snapshot that
// lacks an exception for a chunk, it reserves a COW chunk, copies the
// chunk there, commits the exception (data and metadata durable; commits
// of concurrent writers share metadata writes) and only then lets the
// write proceed. dm.Device.PrepareWrites runs it for a burst of writes
// about to come (the NBD reader's queue), their chunks committed together
// (cowState.copyOutRanges).
//
// # Locking
//
// Each COW state has a table of chunk locks (striped by chunk number). A
// snapshot read of a chunk that still lives on the origin read-holds the
// chunk's lock while it reads, and copy-out write-holds it, so copy-out
// waits for such reads to drain before the origin chunk may change (the
// kernel's conflicting-I/O check). Chunk locks are taken in ascending
// stripe order, one COW state at a time, except that the merge loop holds
// its own state's locks while it copies out to the other snapshots of the
// origin; at most one snapshot of an origin merges, so there is no cycle.
// The exception table has its own RWMutex, never held during I/O.
//
// # Failure
//
// A snapshot that cannot take an exception on an origin write (COW full,
// copy or commit error) is invalidated: the header's valid flag is
// cleared, its I/O fails, its status says Invalid, and the origin write
// proceeds, as in the kernel. With store type PO a snapshot write that
// finds the COW full marks the snapshot Overflow instead: that write fails,
// reads and writes to chunks it already has keep working.
package snapshot
