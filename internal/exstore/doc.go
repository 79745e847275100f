// Package exstore defines the exception store: where a snapshot keeps the
// original contents of the origin chunks that have changed since the
// snapshot was taken, and the table that says which COW chunk holds which
// origin chunk. It mirrors the kernel's dm-exception-store.h; the two
// implementations are in the subpackages persistent (store type P/PO, the
// kernel's on-disk format byte for byte) and transient (store type N, the
// table lives only in memory).
//
// # Model
//
// Both the origin and the COW device are divided into chunks of ChunkSize
// sectors (512 bytes each). An Exception maps origin chunk Old to COW chunk
// New. A store hands out free COW chunks (Prepare), records exceptions
// (Commit), reports the ones recorded earlier (Load), and undoes them in
// reverse order while a snapshot merges back into its origin
// (PrepareMerge/CommitMerge).
//
// The store never moves data itself. The snapshot target drives it:
//
//  1. Open the store, then Load: the store calls back once per exception it
//     finds, in commit order. Prepare, Commit and the merge calls fail with
//     ErrNotLoaded until Load has succeeded.
//  2. On the first write to an origin chunk: c, err := Prepare() reserves a
//     free COW chunk (ErrNoSpace when the COW device is full).
//  3. The target copies the origin chunk into COW chunk c through the
//     backing device (a plain write, no flush needed).
//  4. Commit(Exception{Old: origin chunk, New: c}). When Commit returns nil
//     the copied data and the record are both durable: a persistent store
//     first flushes the COW device (so data reaches the media before the
//     metadata that points to it), then writes the metadata and flushes
//     again. Only then may the target let the origin write proceed.
//
// Commit may be called from many goroutines at once; concurrent commits
// share one metadata write and one pair of flushes (group commit, as the
// kernel batches the exceptions that complete while a metadata write is in
// flight). An error from Commit means the exception is not recorded: the
// target must invalidate the snapshot (Drop), as the kernel does.
//
// # Validity
//
// A store is valid until Drop is called or a metadata write fails; the
// kernel calls this an invalidated snapshot and there is no way back. Drop
// records the invalidation on disk (the header's valid field), so Load
// after a restart returns ErrInvalidated; the target then loads the
// snapshot in its invalid state and fails all its I/O. Prepare and Commit on
// an invalid store return ErrInvalidated.
//
// # Concurrency
//
// All methods are safe for concurrent use. Load, PrepareMerge, CommitMerge
// and Drop are meant to be called by one goroutine at a time (the target's
// construction and merge loop); Prepare, Commit, Usage, Status and
// ChunkSize may be called from any number of goroutines. Close waits for
// commits in flight and does not close the backing device, which the
// caller owns.
//
// # Errors
//
// Conditions a caller tests are sentinel errors (errors.go), always matched
// with errors.Is. Damaged metadata is reported with an error made by
// Corruptf, which matches ErrCorrupt and names the area, record, byte
// offset and field that is wrong. Bad on-disk data never causes a panic.
package exstore
