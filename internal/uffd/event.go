package uffd

import (
	"fmt"
	"unsafe"
)

// Event is the kind of a message read from a userfaultfd.
type Event uint8

// Events (UFFD_EVENT_*). Only EventPagefault leaves a thread waiting for the
// handler; the others are sent by munmap, mremap, madvise and fork, which
// block until the message has been read (not until it is handled).
const (
	EventPagefault Event = 0x12
	EventFork      Event = 0x13 // needs FeatureEventFork
	EventRemap     Event = 0x14 // needs FeatureEventRemap
	EventRemove    Event = 0x15 // needs FeatureEventRemove
	EventUnmap     Event = 0x16 // needs FeatureEventUnmap
)

func (e Event) String() string {
	switch e {
	case EventPagefault:
		return "pagefault"
	case EventFork:
		return "fork"
	case EventRemap:
		return "remap"
	case EventRemove:
		return "remove"
	case EventUnmap:
		return "unmap"
	}
	return fmt.Sprintf("event(%#x)", uint8(e))
}

// FaultFlags qualify a page fault (UFFD_PAGEFAULT_FLAG_*).
type FaultFlags uint64

const (
	// FaultWrite: the access was a write.
	FaultWrite FaultFlags = 1 << 0
	// FaultWP: the fault is a write to a write-protected page (without it, a
	// missing-page fault).
	FaultWP FaultFlags = 1 << 1
	// FaultMinor: a minor fault (the page is in the page cache but not mapped).
	FaultMinor FaultFlags = 1 << 2
)

func (f FaultFlags) String() string {
	s := ""
	for _, n := range []struct {
		bit  FaultFlags
		name string
	}{{FaultWrite, "write"}, {FaultWP, "wp"}, {FaultMinor, "minor"}} {
		if f&n.bit != 0 {
			if s != "" {
				s += "|"
			}
			s += n.name
			f &^= n.bit
		}
	}
	if f != 0 || s == "" {
		if s != "" {
			s += "|"
		}
		s += fmt.Sprintf("%#x", uint64(f))
	}
	return s
}

// Msg is one message read from a userfaultfd, laid out exactly as the
// kernel's struct uffd_msg (32 bytes), so ReadEvents reads straight into a
// []Msg. Decode it with the method for its Event.
type Msg struct {
	Event Event
	_     [7]byte
	arg   [3]uint64 // the union: pagefault, fork, remap, remove/unmap
}

// Fault describes a page fault: the thread that took it waits until the
// handler resolves it (Unprotect, or Wake after UnprotectNoWake).
type Fault struct {
	// Addr is the faulting address in the address space of the process
	// that created the userfaultfd, rounded down to the page (the huge page
	// on hugetlbfs) unless FeatureExactAddress is enabled.
	Addr  uintptr
	Flags FaultFlags
	// TID is the faulting thread's id, in that thread's pid namespace, with
	// FeatureThreadID; 0 without.
	TID int
}

// Fault decodes an EventPagefault message.
func (m Msg) Fault() Fault {
	return Fault{
		Addr:  uintptr(m.arg[1]),
		Flags: FaultFlags(m.arg[0]),
		TID:   int(*(*uint32)(unsafe.Pointer(&m.arg[2]))),
	}
}

// Range decodes an EventRemove or EventUnmap message: [start, end) of the
// range removed or unmapped.
func (m Msg) Range() (start, end uintptr) {
	return uintptr(m.arg[0]), uintptr(m.arg[1])
}

// Remap decodes an EventRemap message: length bytes moved from from to to.
func (m Msg) Remap() (from, to, length uintptr) {
	return uintptr(m.arg[0]), uintptr(m.arg[1]), uintptr(m.arg[2])
}

// ForkFD decodes an EventFork message: the descriptor of the child's new
// userfaultfd, already installed in the process that read the message.
func (m Msg) ForkFD() int {
	return int(*(*uint32)(unsafe.Pointer(&m.arg[0])))
}

func (m Msg) String() string {
	switch m.Event {
	case EventPagefault:
		f := m.Fault()
		return fmt.Sprintf("pagefault %#x %v tid %d", f.Addr, f.Flags, f.TID)
	case EventRemove, EventUnmap:
		s, e := m.Range()
		return fmt.Sprintf("%v [%#x, %#x)", m.Event, s, e)
	case EventRemap:
		from, to, n := m.Remap()
		return fmt.Sprintf("remap %#x -> %#x len %#x", from, to, n)
	case EventFork:
		return fmt.Sprintf("fork fd %d", m.ForkFD())
	}
	return fmt.Sprintf("%v %#x", m.Event, m.arg)
}

const msgSize = int(unsafe.Sizeof(Msg{}))

// Msg must be exactly the kernel's 32-byte struct uffd_msg.
var (
	_ [unsafe.Sizeof(Msg{}) - 32]byte
	_ [32 - unsafe.Sizeof(Msg{})]byte
)

func msgBytes(buf []Msg) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(buf))), len(buf)*msgSize)
}
