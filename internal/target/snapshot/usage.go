package snapshot

import (
	"fmt"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// Usage is what a snapshot or snapshot-merge target's status says, as a
// value: callers ask the live target for it (UsageOf) instead of parsing
// the status text, which String prints byte for byte as the kernel's
// snapshot_status does.
type Usage struct {
	State State
	// Allocated, Total and Metadata are the COW's usage in sectors, set
	// when State is Valid: chunks in use (header, metadata and data),
	// the COW device's size, and the chunks holding metadata.
	Allocated, Total, Metadata dm.Sector
	// Merging: a snapshot-merge target has taken the COW over; the merge
	// has finished when Merged says so.
	Merging bool
}

// State is a snapshot's condition, in the order the status reports it:
// an invalid snapshot says Invalid whatever else is true of it.
type State uint8

const (
	// Valid: the snapshot works; its usage figures are in the status.
	Valid State = iota
	// Invalid: the snapshot was invalidated (its COW filled up, or an
	// exception could not be recorded) and fails all I/O.
	Invalid
	// MergeFailed: the merge stopped on an error.
	MergeFailed
	// Overflow: a PO snapshot's COW is full; writes that need a new COW
	// chunk fail, the rest works.
	Overflow
)

// String is the status text of the state ("" for Valid, whose status is
// the usage figures).
func (s State) String() string {
	switch s {
	case Valid:
		return ""
	case Invalid:
		return "Invalid"
	case MergeFailed:
		return "Merge failed"
	case Overflow:
		return "Overflow"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// String is the status text: `Invalid`, `Merge failed`, `Overflow`, or
// `<allocated>/<total> <metadata>` in sectors.
func (u Usage) String() string {
	if u.State != Valid {
		return u.State.String()
	}
	return fmt.Sprintf("%d/%d %d", u.Allocated, u.Total, u.Metadata)
}

// Merged reports whether a merge has copied every exception back: only
// the header and metadata are left in use.
func (u Usage) Merged() bool {
	return u.Merging && u.State == Valid && u.Allocated == u.Metadata
}

// usage is the state's Usage.
func (s *cowState) usage() Usage {
	u := Usage{Merging: s.merging.Load()}
	switch {
	case !s.valid.Load():
		u.State = Invalid
	case s.mergeFailed.Load():
		u.State = MergeFailed
	case s.overflow.Load():
		u.State = Overflow
	default:
		u.Allocated, u.Total, u.Metadata = s.store.Usage()
	}
	return u
}

// Usage is the target's status as a value.
func (t *snap) Usage() Usage { return t.state.usage() }

// UsageOf returns the usage of the snapshot or snapshot-merge target that
// is dev's whole live table, and false if dev's live table is something
// else.
func UsageOf(dev *dm.Device) (Usage, bool) {
	var u Usage
	err := withLiveSnap(dev, func(t *snap) { u = t.Usage() })
	return u, err == nil
}
