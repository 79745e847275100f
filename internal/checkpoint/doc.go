// Package checkpoint is the checkpoint engine of a durable memory volume
// (issue 11): it writes consistent cuts of a mapped device into a durable
// image (internal/checkpoint/image), each checkpoint holding only the
// chunks first written since the one before.
//
// # Checkpoint k
//
// Checkpoint k is the device's contents at a cut t_k, taken with
// dm.Device.Quiesce: the same suspend that starts a snapshot's cut, so
// that while the engine's function runs no direct store reaches the
// memory (the session holds write faults and has write-protected every
// mapping) and no block I/O is under way. At the cut the engine swaps
// its dirty set: D_k, the chunks written since t_{k-1}, becomes the set
// to write back, and tracking starts again from empty. Then the device
// runs again and the engine writes D_k back into one image transaction
// (Txn), which it commits stamped t_k.
//
// # Tracking
//
// The engine is the device's dm.WriteObserver. dm tells it of every
// block write (WriteAt, WriteZeroes, Discard: NBD, FUSE, the API, and
// devices stacked on it) before the write reaches the table, and of
// every direct store before the store is let through: the fault path
// runs PrepareWrite first. Its Granularity, the image's chunk, makes
// WriteGranularity non-zero, so a cut's write protection stays on every
// mapping after the cut ends and the first store to each chunk after
// each cut faults once. Before Start nothing was tracked (and mappings
// made then are not protected until the next cut), so the first
// checkpoint after Start writes every chunk, unless the caller vouches
// that the device equals the image's last checkpoint (Config.InSync).
//
// # Why each chunk's t_k contents are what is written
//
// Invariant A (tracking): a chunk whose contents at t_k differ from its
// contents at t_{k-1} is in D_k. Every change passes BeforeWrite first,
// which marks the chunk dirty before returning; BeforeWrite runs with
// the device's I/O admitted, so a cut (which drains I/O) sees either
// the mark and the write or neither. A direct store is let through only
// after its fault's PrepareWrite, and keeps storing without faults only
// until the next cut protects the page again: the cut waits for fault
// resolutions under way, so a store that lands before the cut had its
// chunk marked before it, and one after it faults again (next set).
// When checkpoint k-1 failed, D_{k-1} is merged back into the dirty
// set, so checkpoint k writes it too.
//
// Invariant B (copy-on-write): while checkpoint k is written back,
// pending holds the chunks of D_k whose t_k contents have not been
// captured yet. A chunk of D_k is captured exactly once, under mu, by
// whoever comes first: the write-back (into its own buffer, then Put),
// or a writer's BeforeWrite (into the bounded buffer, which the
// write-back Puts later). Capture reads the memory while reading[c]
// holds every other writer of c in BeforeWrite; only then is c's
// pending bit cleared. So while c's bit is set, nobody has changed c
// since t_k (every change passes BeforeWrite, which waits for the bit
// to clear, or clears it by capturing first), and what is captured is
// c's t_k contents. The write-back reads memory straight from the
// region files behind the device (the extents Quiesce handed it at the
// cut), never through the device, so a writer held in BeforeWrite, which
// holds the device's I/O admitted, never blocks it.
//
// Invariant C (backpressure): the buffer holds at most BufferBytes. A
// writer that must capture a chunk when it is full waits (counted in
// Status) and puts the chunk on the urgent list, which the write-back
// takes before anything else: it captures that chunk itself, which lets
// the writer go, or frees room by writing back buffered chunks. The
// write-back never waits for a writer except for a capture under way
// (a memory copy), so the wait ends.
//
// # Group commit
//
// Requests (Checkpoint, Persist, the interval) join the round the next
// cut will serve; one worker takes the round before cutting, so every
// request joined before the cut, and every store made before the
// request is in it. Persist shares a checkpoint under way when nothing
// was written since its cut, and returns at once when the last
// checkpoint is complete and nothing was written since.
package checkpoint
