package exstore

import (
	"fmt"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// Sector is a length or offset in 512-byte sectors, the unit of chunk sizes
// and of the usage figures in a snapshot's status line: backing.Sector.
type Sector = backing.Sector

// SectorSize is the size of a Sector in bytes.
const SectorSize = backing.SectorSize

// Chunk is the index of a chunk on the origin or the COW device, in units of
// the store's chunk size (the kernel's chunk_t).
type Chunk uint64

// Exception records that origin chunk Old has been copied to COW chunk New.
type Exception struct {
	Old, New Chunk
}

func (e Exception) String() string { return fmt.Sprintf("%d->%d", e.Old, e.New) }

// StatusType selects the text a status call produces, as dmsetup status
// (Info) and dmsetup table (Table) do: backing.StatusType, the type
// targets' Status takes too.
type StatusType = backing.StatusType

const (
	// StatusInfo is the text for dmsetup status; stores print nothing there
	// (the snapshot target prints Usage).
	StatusInfo = backing.StatusInfo
	// StatusTable is the store's part of the table line: "P 16", "PO 16"
	// or "N 16" (type and chunk size in sectors).
	StatusTable = backing.StatusTable
)

// Store is an exception store. See the package documentation for the
// protocol between the snapshot target and the store.
type Store interface {
	// Load reads the store's metadata and calls fn once per committed
	// exception, in commit order; an error from fn stops Load and is
	// returned. It must be called exactly once, before anything else but
	// ChunkSize, Status and Usage. A store whose header says it was
	// invalidated returns ErrInvalidated (the target then loads the snapshot
	// as invalid); damaged metadata returns an error matching ErrCorrupt.
	Load(fn func(e Exception) error) error

	// Prepare reserves a free COW chunk for a new exception. It returns
	// ErrNoSpace when the COW device is full and ErrInvalidated when the
	// store was invalidated. A reserved chunk that is never committed is
	// lost until the store is reloaded.
	Prepare() (Chunk, error)

	// Commit records e durably: when it returns nil, every write to the COW
	// device that completed before Commit was called (the copy into e.New)
	// is on stable media, and so is the record. Concurrent commits share
	// metadata writes and flushes. e.New must be a data chunk of the COW
	// device (normally one Prepare returned). After an error e may or may
	// not be on disk; the store refuses further exceptions and the caller
	// must invalidate the snapshot with Drop.
	Commit(e Exception) error

	// PrepareMerge returns the most recently committed exception that has
	// not been merged yet, and n, the length of the run of exceptions ending
	// with it that are consecutive in both Old and New (so one copy of n
	// chunks from last.New-n+1 to last.Old-n+1 merges them all). n is 0 when
	// nothing is left to merge. After the first call the store takes no new
	// exceptions (ErrMerging). Stores that cannot merge return
	// ErrMergeUnsupported.
	PrepareMerge() (last Exception, n int, err error)

	// CommitMerge durably forgets the last n exceptions returned by
	// PrepareMerge, after the caller has copied them back to the origin and
	// flushed it. n must not exceed the run PrepareMerge returned.
	CommitMerge(n int) error

	// Drop invalidates the snapshot and records that on disk. It is the
	// only way to invalidate and cannot be undone.
	Drop() error

	// Usage reports how full the COW device is, in sectors: allocated counts
	// header, metadata and data chunks in use, total is the COW device size,
	// metadata counts the chunks holding metadata. A merge has finished when
	// allocated == metadata.
	Usage() (allocated, total, metadata Sector)

	// ChunkSize is the chunk size in sectors. For a persistent store it is
	// the size recorded on disk once the store is opened.
	ChunkSize() Sector

	// Status returns the store's part of a status or table line (see
	// StatusType), without leading or trailing blanks.
	Status(kind StatusType) string

	// Close waits for commits in flight and releases the store. It does
	// not close the COW device. Calls after Close return ErrClosed; a
	// second Close returns nil.
	Close() error
}

// Grower is implemented by stores that can take in a COW device grown
// since they were opened (lvextend of a snapshot): Grow reads the
// device's size again, and Prepare hands out the new chunks. The kernel's
// persistent store sees a larger COW device the same way, by its size.
type Grower interface {
	Grow()
}

// BatchCommitter is implemented by stores that can commit many exceptions
// in one metadata write on request (the persistent store). Callers with
// several exceptions at hand use it instead of one Commit per exception;
// its durability promise is Commit's, for all of them.
type BatchCommitter interface {
	CommitBatch(es []Exception) error
}
