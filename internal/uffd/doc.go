// Package uffd is the kernel glue for userfaultfd(2) write-protect on shared
// memory: create a userfaultfd (or adopt one another process created),
// negotiate features, register ranges, protect and unprotect pages, read
// fault and layout events. It knows nothing of daxsnap: no devices, chunks
// or snapshots.
//
// # Model
//
// A userfaultfd serves one address space, that of the process that created
// it, whoever holds the descriptor: a daemon that receives a client's
// userfaultfd over SCM_RIGHTS (FromFD) protects, unprotects and wakes by the
// client's addresses, and fault messages carry the client's addresses and
// thread ids. The daemon copies old data through its own mapping of the
// same file, which is not registered and never faults.
//
// The sequence: New, API (once per userfaultfd), Register with ModeWP,
// Protect. A write to a protected page then stops the writing thread in the
// kernel and queues an EventPagefault (flags FaultWP|FaultWrite); reads do
// not fault. The handler reads the message (ReadEvents, Poll, Wait), does
// its work, and Unprotect lifts the protection and wakes the writer, whose
// store then completes.
//
// # What the kernel does (checked by this package's tests, Linux 6.18)
//
//   - Pages never touched: on shmem (tmpfs, memfd) and hugetlbfs, Protect
//     covers pages the registered mapping never touched and holes of the
//     file, with or without FeatureWPUnpopulated: the kernel leaves a marker
//     in the page table (since 5.19, FeatureWPHugetlbfsShmem; the kernel
//     needs CONFIG_PTE_MARKER_UFFD_WP to offer that feature at all). Only on
//     anonymous memory does a never-touched page escape protection without
//     FeatureWPUnpopulated (6.4). The marker also survives MADV_DONTNEED in
//     the client: the next write still faults.
//   - MADV_REMOVE by the client zeroes a protected page without any write
//     fault: only an EventRemove tells, and the client's madvise returns as
//     soon as that message is read, before the handler can act. A
//     copy-on-write user must forbid it or treat an EventRemove over
//     protected pages as a write. Likewise, only mappings are protected:
//     whoever holds a writable descriptor of the file changes it freely
//     (write(2), fallocate, another mapping).
//   - Layout events (EventRemove, EventUnmap, EventRemap) make the client's
//     madvise, munmap or mremap wait until the handler has read them. Until
//     the client has gone on, range operations fail with ErrLayoutChanging
//     (EAGAIN), also for a moment after the read: read the events, retry. An
//     mremap sends EventRemap then EventUnmap of the old place; the moved
//     range stays registered, with its protection.
//   - Signals: a thread waiting on a fault is interrupted by any signal (Go
//     preempts a goroutine running over 10 ms with SIGURG); it retries the
//     write and faults again, with a new message. Handlers must expect one
//     fault several times, and after Unprotect a late repeat needs nothing,
//     or at most Wake.
//   - Release: when the last descriptor of the userfaultfd is closed (the
//     handler closes it or dies, and the client closed its own copy after
//     sending it), the kernel wakes every waiting writer and drops all
//     registration and protection: the writes land unprotected. While any
//     process still holds a copy, nothing is released, and a writer waits
//     for a handler that is gone until that copy is closed too.
//   - Client death: a client killed while a thread waits on a fault dies
//     normally; the handler's range operations then fail with
//     ErrProcessGone (ESRCH; Register reports ENOMEM), and no message comes.
//     Nothing on the userfaultfd says the client died: watch its socket.
//   - UserModeOnly: a system call that writes into a protected page (read(2)
//     into it, for instance) fails with EFAULT instead of waiting.
//   - Protect and Unprotect act on every write-protect-registered mapping in
//     the range, even one registered with another userfaultfd of the same
//     process; the faults go to the userfaultfd the mapping is registered
//     with.
//   - Visibility: once Protect returns, every store another process made
//     through the range before it is visible through any other mapping of
//     the file, and every later store faults: memory read right after
//     Protect is a prefix of the writer's stores, store by store
//     (bench/uffdwp/wp_prefix, 0 misses in 220,000 cuts on tmpfs). A store
//     the compiler splits (Go under -race writes a PutUint64 as 8 byte
//     stores) can be caught half done.
//   - On hugetlbfs every range must be huge-page aligned, and fault
//     addresses are rounded down to the huge page.
//
// # Waiting
//
// ReadEvents never blocks. Poll blocks the calling thread in poll(2). Wait
// reads in a busy loop for a while, then blocks: in poll(2) (BlockPoll, the
// kernel wakes the thread directly) or by parking the goroutine in the
// runtime poller (BlockNetpoll, no thread held, one more hand-off per
// wake-up). bench/uffdwp measures each against a writer in this process or
// another, on one CPU or two. A Spinner drops the spin while it holds back
// a writer the kernel woke on the spinning handler's CPU.
//
// # Concurrency
//
// Every method is safe for concurrent use. Close waits for running
// operations, wakes Poll and Wait (they return ErrClosed), and makes every
// later call fail with ErrClosed.
package uffd
