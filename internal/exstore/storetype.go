package exstore

import (
	"fmt"
	"strings"
)

// StoreType is the exception store type of a snapshot table line (the
// kernel's dm_exception_store_create argument): P, PO or N.
type StoreType uint8

const (
	// Persistent (P) keeps the exceptions on the COW device, in the
	// kernel's on-disk format: the snapshot survives a restart and can
	// merge.
	Persistent StoreType = iota + 1
	// PersistentOverflow (PO) is Persistent for a userspace that
	// understands the Overflow status: a snapshot write that finds the COW
	// full fails and marks the snapshot Overflow instead of invalidating it.
	PersistentOverflow
	// Transient (N) keeps the exception table in memory only: the snapshot
	// is lost when its table is unloaded and cannot merge.
	Transient
)

// ParseStoreType reads a store type as the kernel does, in either case:
// "P", "PO" or "N" ("p", "po", "n").
func ParseStoreType(s string) (StoreType, error) {
	switch strings.ToUpper(s) {
	case "P":
		return Persistent, nil
	case "PO":
		return PersistentOverflow, nil
	case "N":
		return Transient, nil
	}
	return 0, fmt.Errorf("invalid store type %q: want P (persistent), PO (persistent, overflow aware) or N (transient)", s)
}

// String is the store type as a table line prints it: "P", "PO" or "N"
// (or "StoreType(n)" for a value that is none of them).
func (t StoreType) String() string {
	switch t {
	case Persistent:
		return "P"
	case PersistentOverflow:
		return "PO"
	case Transient:
		return "N"
	}
	return fmt.Sprintf("StoreType(%d)", uint8(t))
}

// IsPersistent reports whether t keeps its exceptions on the COW device
// (P or PO): only such a snapshot survives a restart and can merge.
func (t StoreType) IsPersistent() bool { return t == Persistent || t == PersistentOverflow }

// Describe names t for people: "persistent (P)", "persistent, overflow
// aware (PO)" or "transient (N)".
func (t StoreType) Describe() string {
	switch t {
	case Persistent:
		return "persistent (P)"
	case PersistentOverflow:
		return "persistent, overflow aware (PO)"
	case Transient:
		return "transient (N)"
	}
	return t.String()
}
