package dm

import (
	"github.com/daxsnap/daxsnap/internal/backing"
)

// StatusType selects what Status prints, as dmsetup's status and table
// verbs; it is backing.StatusType, re-exported for callers of dm.
type StatusType = backing.StatusType

const (
	// StatusInfo is the target's `dmsetup status` payload.
	StatusInfo = backing.StatusInfo
	// StatusTable is the target's constructor arguments as `dmsetup table`
	// prints them; parsing them again must build an identical target.
	StatusTable = backing.StatusTable
)

// TargetType is a registered kind of target (the kernel's struct target_type).
type TargetType struct {
	Name    string
	Version [3]int
	// New constructs a target from one table line's arguments (ctr). It
	// validates every argument and opens its devices through ctx, and
	// returns an error whose text is only the reason ("invalid offset
	// \"x\": want a sector number"); the core adds device, line and type.
	New func(ctx *CtorContext, args []string) (Target, error)
}

// Target implements one table line. Offsets are in bytes relative to the
// start of the target; the core has already split I/O at target boundaries
// and checked it lies within [0, Len), so targets never re-check bounds.
// ReadAt/WriteAt follow io.ReaderAt/io.WriterAt; concurrent calls are
// allowed (writes only on disjoint ranges).
type Target interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	// Flush makes completed writes durable (REQ_PREFLUSH).
	Flush() error
	// Discard deallocates a range; what it reads back as is the target's business.
	Discard(off, n int64) error
	// WriteZeroes makes the range read back as zeroes.
	WriteZeroes(off, n int64) error
	// Status returns the text after "<start> <len> <type> " in dmsetup's
	// status (StatusInfo) or table (StatusTable) output.
	Status(kind StatusType) string
	// Close releases the target (dtr). Devices opened through the
	// CtorContext are released by the core, not by the target.
	Close() error
}

// DirectAccesser is implemented by targets that can map their range to
// memory (the kernel's direct_access). A target without it makes its table
// DAX-incapable. The core calls it only when every device the target opened
// is DAX-capable, unless the target opened no device (error).
type DirectAccesser interface {
	// DirectAccess returns the memory of target bytes [off, off+n); it may
	// return fewer bytes (up to an internal boundary such as a stripe
	// chunk), never zero without an error.
	DirectAccess(off, n int64) ([]byte, error)
}

// Capabler is implemented by targets that narrow the capabilities the core
// derives from their devices; why explains each capability taken away, for
// the capability rule's message ("snapshot-origin over a regular file
// cannot be write-protected").
type Capabler interface {
	Capabilities(fromDevices backing.Capability) (caps backing.Capability, why string)
}

// IOHinter is implemented by targets that set the optimal I/O size of the
// device they make (the kernel's io_hints: striped says chunk × stripes),
// in bytes; a target without it passes on its mapped devices' (see
// Device.ReadAhead).
type IOHinter interface {
	IOOpt() int64
}

// Messager is implemented by targets that take `dmsetup message`. A target
// without it answers every message with ErrInvalidArgument.
type Messager interface {
	Message(args []string) (reply string, err error)
}

// Suspender is implemented by targets with presuspend/postsuspend work.
// PostSuspend runs after in-flight I/O has drained.
type Suspender interface {
	PreSuspend()
	PostSuspend()
}

// Resumer is implemented by targets with preresume/resume work. PreResume
// may refuse the resume; the device then stays suspended with its tables.
type Resumer interface {
	PreResume() error
	Resume()
}

// WritePreparer is implemented by targets that must do work before the
// first write to a range reaches the media: snapshot-origin copies the
// chunks into every snapshot that still needs them. Block writes through
// the target do it themselves; the direct-access fault path, whose writes
// bypass the target, calls it through Device.PrepareWrite. Targets without
// it need no preparation. A backing device that is itself a mapped device
// (/dev/mapper/NAME) implements it too, and Device.PrepareWrite reaches it
// through the lines that remap onto it.
type WritePreparer interface {
	PrepareWrite(off, n int64) error
}

// Range is the byte range [Off, Off+Len) of a device or target.
type Range struct{ Off, Len int64 }

// WritesPreparer is implemented by targets whose copy-before-write can
// share work between ranges: snapshot-origin copies the chunks of all of
// them out and commits their exceptions in one metadata write, where a
// write each would commit its own. Device.PrepareWrites reaches it, for
// block writes that are about to come (an NBD client's queued burst).
type WritesPreparer interface {
	PrepareWrites(rs []Range) error
}

// Remapper is implemented by targets that pass a range straight through to
// one backing device (linear, striped, snapshot-origin): Remap returns the
// device and offset that hold target byte off, and how many bytes from off
// (at most n, never 0 without an error) lie there contiguously. Device.Extents
// uses it to hand the backing files of a DAX device to a client.
type Remapper interface {
	Remap(off, n int64) (ref *DeviceRef, devOff, length int64, err error)
}

// ExtentSource is implemented by backing devices that are themselves mapped
// devices (/dev/mapper/NAME in a table line): Device.Extents recurses into
// them.
type ExtentSource interface {
	Extents(off, n int64) ([]Extent, error)
}

// WriteGranularizer is implemented by targets whose direct-access stores
// must be caught before they reach memory (snapshot-origin): WriteGranularity
// returns the size of the aligned unit that one copy-before-write step
// covers around target byte off (the smallest chunk size among the
// snapshots that still copy out), or 0 when no store needs catching now.
// Mapped devices used as backing devices implement it too (see
// WritePreparer).
type WriteGranularizer interface {
	WriteGranularity(off int64) int64
}
