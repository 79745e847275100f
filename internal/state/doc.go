// Package state keeps daxsnap's persistent state in one bbolt file,
// <state>/daxsnap.db: the memory regions the daemon made and the mapped
// devices with their table texts. Everything the daemon needs to rebuild
// its devices after a restart is here; nothing else is.
//
// Every change goes through a transition, as containerd's devmapper
// snapshotter does (plugins/snapshots/devmapper/pool_device.go): the record
// first says which operation is in flight (Op), the operation runs, and one
// transaction then stores the outcome and clears Op. A record found with Op
// set at start-up was in flight when the daemon stopped; the daemon decides
// how to finish or undo it.
//
// Layout: bucket "meta" holds "version" (FormatVersion); buckets
// "regions" and "devices" map a name to the JSON of a Region or a Device;
// bucket "merges" maps a snapshot name to the JSON of a Merge, the last
// KeepMerges merges that finished (a bucket older files lack: it is
// created when they are opened).
//
// The file is locked (flock) while open, so a second daemon on the same
// directory is refused with a LockedError naming the holder's pid.
package state
