// Package dm is daxsnap's device-mapper core: named devices whose block
// I/O and memory go through tables of targets, driven by the verbs of
// dmsetup (create, load, suspend, resume, clear, remove, rename, message,
// info, table, status).
//
// # Model
//
// A Manager holds the devices by name (and uuid), builds tables from its
// Registry of target types, and opens backing devices through its
// DevicePool, which shares one open device between every table line that
// names it (the kernel's dm_dev refcounts).
//
// A Device has two table slots, as the kernel's mapped_device does: the
// live table, which serves block I/O (ReadAt, WriteAt, ...) and memory
// (Extents, Memory), and the inactive table, which Load fills and Resume
// makes live (the old live table is closed then). Clear drops the inactive
// table; Table and Status print either slot. Suspend holds new block I/O
// and drains the I/O in flight; Resume lets it flow again. A device has an
// open count (OpenBy/CloseBy, with named Holders), and a removal is
// refused while it is open unless it is deferred to the last close.
//
// A Table is immutable once built: Load parses the text (ParseTable),
// runs every line's constructor (TargetType.New) with a CtorContext, and
// only a fully built table is kept; on error nothing stays open. A Target
// implements one line, with offsets relative to its own start; the core
// splits I/O at line boundaries. Optional interfaces add what a target can
// do: DirectAccesser (memory), Remapper (pass-through to one device),
// Messager, Suspender and Resumer (hooks), WritePreparer and
// WriteGranularizer (copy-before-write for direct stores), Capabler, and
// ActivationCutter (a point-in-time image). Devices a constructor opens
// through its CtorContext belong to the core, which derives the table's
// capabilities from them and releases them with the table.
//
// # Lock order
//
// Each Device has three locks, always taken in this order:
//
//   - ctl serialises the verbs on one device (load, suspend, resume,
//     clear, remove, rename, message, info, open and close);
//   - memMu guards the memory a suspend's cut covers (Device.Memory reads
//     it without waiting for the suspended device);
//   - io is read-held by every block I/O for its duration and write-held
//     while the device is suspended. Block I/O never takes ctl.
//
// The Manager's mu guards the name map and the installed hooks; it is
// taken after a device's ctl (Remove and Rename hold ctl, then take mu)
// and never held while a device lock is taken. Stacked devices take their
// io locks top-down: the I/O of an upper device enters the lower one
// while it holds its own. Device.Memory only tries the read lock, so a
// cut of a stacked device never waits for a suspended one below it.
//
// The Manager's stackMu is held by Load from the check of the new
// table's stacking (no loop) until the table is in place, before the
// device's ctl; while it is held, the check takes the ctl of the devices
// below, one at a time. Stacked devices take ctl top-down too: a table
// closing releases its open of the device below under the upper ctl,
// except the tables of a removed device that RemoveLater's release
// closes, without it: nothing else reaches those any more.
//
// The OnRemove subscribers run after a removal, with neither the
// removed device's locks nor the Manager's mu held, but possibly with
// the ctl lock of a device stacked over it (its table let go of the
// device's last open, and a deferred removal ran): they take only their
// own locks, after any device lock, and never wait for a verb.
// Device.Removed reads a flag without a lock, for their layers to check
// under their own locks, so that no state is made for a device that has
// gone.
//
// # Stacking
//
// A table line may name another device of the same Manager as its
// backing device: /dev/mapper/NAME, or /dev/dm-N by its Number (stack.go).
// The constructor's OpenDevice opens it through Manager.Open, as the
// kernel's dm_get_device does: the line holds the device itself (its
// identity), which counts the open with a HolderTable until the table is
// closed, so a rename carries the table along and `table` prints the new
// name. Which devices stack on which is what the tables opened, never
// what their text says: Below (dmsetup deps), Above (the holders), Over
// and StackOrder. A load that would make a device sit under itself is
// refused; a line over a device that is missing or has no live table
// fails with a StackError saying which.
//
// # When the guards run
//
// With ctl held, in this order:
//
//   - Load: the capability rule (below), after the table is built and
//     before it takes the inactive slot.
//   - Suspend: when a new table is already loaded, the SwapGuard is asked
//     first (its release is kept for the resume), while the device still
//     serves I/O; a refusal leaves it running. Then the targets'
//     PreSuspend, the cut of the live table's memory (no direct store
//     reaches a suspended device, see cut.go), the drain of block I/O
//     (io write-held), and PostSuspend.
//   - Resume: the SwapGuard when it was not asked at suspend and a table
//     is swapped, then a suspend if needed, then an activation cut for the
//     next table's ActivationCutters, then every PreResume of the next
//     table (a refusal leaves the device suspended with both tables),
//     the swap, I/O released, every Resume, and the cuts ended. The
//     guard's release runs last.
//   - Remove --force and WipeTable swap in an `error` table through the
//     same resume path, so the guard sees them too.
//
// # The capability rule
//
// Programs may have a DAX device's memory mapped, with MAP_SYNC, so what
// a device offers must not be taken from under them. The first table
// that opens a device fixes the device's dax and sync capabilities (a
// table of only `error` lines opens none and fixes nothing); a later
// table that goes live can add capabilities, never remove them. Load
// refuses a table that lacks a fixed capability with ErrDAXChange, naming
// the line and why it lacks it. A line has dax and sync only if its target
// is a DirectAccesser and every device it opened has them, narrowed by the
// target's Capabler. `error` is DAX-capable, so a forced removal is always
// allowed. Remove the device and create it again to change what it is.
package dm
