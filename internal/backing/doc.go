// Package backing opens the media under every daxsnap table: regular files,
// block devices and memory regions (files on tmpfs or hugetlbfs, fsdax files,
// /dev/daxX.Y devices), and probes what each can do (see Capability).
//
// Open decides from what the path is, never from what its name looks like.
// Memory regions are mapped MAP_SHARED once, when opened, and serve block
// I/O by copying from and to that mapping, so daxsnap's block path and every
// direct mapping see the same bytes.
//
// Locking: each device has one RWMutex. Every operation holds it shared for
// its whole duration; Close takes it exclusively, so it waits for running
// operations and nothing unmaps memory or closes a descriptor under them.
// Operations after Close fail with ErrClosed. Slices returned by
// DirectAccess are the exception: they stay valid only until Close.
//
// Memory faults while copying (the file was truncated under the mapping, or
// tmpfs/hugetlbfs ran out of pages for a hole) become EIO errors instead of
// crashing the process.
package backing
