// Package session is the daemon side of DAX mappings: it serves the session
// protocol (internal/wire, on <state>/dax.sock), hands clients the files
// behind a device range (dm.Device.Extents) so they map the memory
// themselves, and takes over the userfaultfd each client registers its
// writable mapping with, to run copy-on-write for snapshots of the device.
//
// # Faults
//
// Every writable mapping over write-protectable memory has a handler
// goroutine reading its userfaultfd (spin, then block; batched). A write
// fault at device offset o runs the device's copy-before-write step
// (dm.Device.PrepareWrite) for the aligned unit around o (the smallest
// snapshot chunk, dm.Device.WriteGranularity; at least the memory's page),
// then lifts the protection of that unit in every mapping of the device,
// in every session, and wakes the writer.
//
// # Consistent cut
//
// BeginCut(dev), called before a new snapshot of dev becomes active, holds
// every write fault on dev's mappings; its finish, called once the
// snapshot is active, write-protects every mapping of dev and then resolves
// the held faults. A write is thus in the snapshot iff it reached memory
// before its page was protected: a prefix-closed image. A mapping made
// while the device has snapshots is protected whole before the client gets
// it.
//
// # Authorization
//
// Any user may connect. Each map request is checked by Config.Authorize
// with the peer's SO_PEERCRED uid, gid and pid and its supplementary
// groups (access.Groups, read once per session); the daemon's check uses
// the device's owner and mode (docs/dax.md "Who may map a device").
// Without Authorize only root and the server's own uid may map.
//
// Limits (see docs/dax.md): block writes are not held during the sweep;
// PrepareWrite runs on the top device only (a mapping of a table over
// /dev/mapper/ORIGIN does not reach the origin's snapshots); a device's
// table change does not recall mappings yet.
package session
