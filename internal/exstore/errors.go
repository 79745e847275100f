package exstore

import (
	"errors"
	"fmt"
)

// Errors returned by Load.
var (
	// ErrCorrupt marks metadata that cannot be trusted: a bad magic number, an
	// exception pointing outside the COW device or at metadata, a chunk size
	// the kernel would refuse. Errors made by Corruptf match it.
	ErrCorrupt = errors.New("exception store metadata is corrupt")
	// ErrUnsupportedVersion means the on-disk format version is not one this
	// code reads (the kernel's format has only version 1 and no compatibility
	// between versions).
	ErrUnsupportedVersion = errors.New("unsupported exception store version")
	// ErrNotLoaded means Prepare, Commit or a merge call came before Load.
	ErrNotLoaded = errors.New("exception store not loaded: call Load first")
	// ErrLoaded means Load was called a second time.
	ErrLoaded = errors.New("exception store already loaded")
)

// Errors returned by Prepare and Commit.
var (
	// ErrNoSpace means the COW device has no free chunk left.
	ErrNoSpace = errors.New("exception store is full")
	// ErrInvalidated means the snapshot was invalidated (Drop, a failed
	// metadata write, or valid=0 in the header); it can never be used again.
	ErrInvalidated = errors.New("snapshot is invalidated")
	// ErrMerging means an exception was prepared or committed after the
	// store started merging; a merging snapshot takes no new exceptions.
	ErrMerging = errors.New("exception store is merging")
	// ErrClosed means the store was closed.
	ErrClosed = errors.New("exception store is closed")
)

// Errors returned by PrepareMerge and CommitMerge.
var (
	// ErrMergeUnsupported means the store type cannot merge (transient
	// stores: merging needs exceptions that survive a table reload).
	ErrMergeUnsupported = errors.New("exception store cannot merge")
)

// Errors from validating a chunk size.
var (
	// ErrInvalidChunkSize means a chunk size is not a power of two, not a
	// multiple of a device's logical block size, or too large.
	ErrInvalidChunkSize = errors.New("invalid chunk size")
)

// corruptionError is an error that matches ErrCorrupt besides whatever its
// message wraps, like pebble's base.CorruptionErrorf.
type corruptionError struct{ err error }

func (e *corruptionError) Error() string   { return e.err.Error() }
func (e *corruptionError) Unwrap() []error { return []error{ErrCorrupt, e.err} }

// Corruptf formats an error (with fmt.Errorf, so %w works) that matches
// ErrCorrupt. The message should name where the bad data is (area, record,
// byte offset, field) and what was expected.
func Corruptf(format string, args ...any) error {
	return &corruptionError{fmt.Errorf(format, args...)}
}
