// Package session is the daemon side of DAX mappings: it serves the session
// protocol (internal/wire, on <state>/dax.sock), hands clients the files
// behind a device range (dm.Device.Extents) so they map the memory
// themselves, and takes over the userfaultfd each client registers its
// writable mapping with, to run copy-on-write for snapshots of the device.
//
// # Faults
//
// Every writable mapping over write-protectable memory has a handler
// goroutine reading its userfaultfd (spin, then block; batched; no spin
// while spinning holds back a writer the kernel woke on the handler's CPU,
// uffd.Spinner). A write
// fault at device offset o runs the device's copy-before-write step
// (dm.Device.PrepareWrite) for the aligned unit around o (the smallest
// snapshot chunk, dm.Device.WriteGranularity; at least the memory's page),
// then lifts the protection of that unit in every mapping of the device,
// in every session, and wakes the writer.
//
// # Restore on demand
//
// While a device's memory is restored on demand from a checkpoint
// (dm.Device.Filling: serve --restore=lazy after a reboot), a mapping
// is registered for missing faults too, through the client's
// userfaultfd, when it is armed. A missing fault restores the unit of
// its page (dm.Device.Fill, which places the page in the file) and wakes
// the client; one on a page still missing after that (a hole a discard
// left) gets a zeroed, write-protected page. A mapping without a
// userfaultfd of the daemon's (read-only) has its whole range restored
// before it is armed.
//
// # Consistent cut
//
// Server.Cut is the one consistent cut, a dm.Cutter the daemon installs on
// its device manager; the dm core calls it, never a verb (dm/cut.go):
//
//   - when a device is suspended, for the memory its live table maps,
//     until its resume: no direct store reaches a suspended device;
//   - when a snapshot target becomes active (dm.ActivationCutter), for
//     its origin's memory, from before its PreResume until after its
//     Resume, before the snapshot device serves a read.
//
// A cut is keyed by memory (file identity and range, dm.MemRange), not by
// device name: it covers every mapping whose pieces overlap that memory,
// made through any device. It write-protects each mapping whole while
// its writers go on (a fault then is resolved at once and its page
// noted), then holds the write faults of the devices those mappings were
// made through (waiting for resolutions under way) and protects the noted
// pages again: the held phase is short whatever the size mapped (cut.go).
// Its end lifts protection from the mappings no other cut covers and
// whose device needs no store caught (WriteGranularity 0), then lets the
// held faults resolve through the tables live then: a snapshot activated
// meanwhile copies first. A store is thus in a snapshot iff it reached
// memory before its page was last protected: a prefix-closed image,
// however the snapshot was made
// (`snapshot create`, dmsetup's recipe, the kernel's order, a restore at
// start). Cuts nest. A mapping armed while a cut covers its memory, or
// while its device has snapshots, is protected whole before the client
// gets it.
//
// # Recall
//
// Server.Recall is the stop-the-world for a change that moves or removes
// a device's memory under its mappings. The daemon calls it before a
// table swap that puts the memory elsewhere (dm.SameMemory false; from
// the dm.SwapGuard it installs), a forced removal's `error` table
// included, and before an offline merge rewrites an origin. It fences the
// device: new map requests that reach it, directly or through a table
// stacked on it, are refused with CodeRetry until the caller's release.
// Then it asks, in parallel, each session that maps the device (or a
// table over it) to give each mapping back by the deadline (wire.OpRecall;
// the client library waits for the mapping's accessors and unmaps it),
// checks in /proc/PID/maps that the process no longer maps the memory
// files in that range, and drops the mapping. All or nothing: if one
// mapping is refused, unanswered by the deadline or still mapped, Recall
// returns a *RecallError naming each holder and lifts the fence, and the
// caller must not make the change (the mappings given back stay given
// back; their clients map again when they next access them). A recall
// does not take the cut's locks: it may run while a cut of the device's
// memory lasts (a device suspended before its new table was loaded).
//
// # Authorization
//
// Any user may connect. Each map request is checked by Config.Authorize
// with the peer's SO_PEERCRED uid, gid and pid and its supplementary
// groups (access.Groups, read once per session); the daemon's check uses
// the device's owner and mode (docs/dax.md "Who may map a device").
// Without Authorize only root and the server's own uid may map.
//
// Limits (see docs/dax.md): MADV_REMOVE on a mapping is caught after the
// fact.
package session
