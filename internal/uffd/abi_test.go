package uffd

import (
	"encoding/binary"
	"testing"
	"unsafe"
)

// The request numbers of the kernel headers, in the asm-generic encoding
// (x86, arm, riscv...) and in the mips/powerpc/sparc one.
func TestIoctlNumbers(t *testing.T) {
	alt := iocDirShift == 29
	for _, tc := range []struct {
		name               string
		got, generic, want uintptr
	}{
		{"UFFDIO_API", reqAPI, 0xc018aa3f, 0xc018aa3f},
		{"UFFDIO_REGISTER", reqRegister, 0xc020aa00, 0xc020aa00},
		{"UFFDIO_UNREGISTER", reqUnregister, 0x8010aa01, 0x4010aa01},
		{"UFFDIO_WAKE", reqWake, 0x8010aa02, 0x4010aa02},
		{"UFFDIO_WRITEPROTECT", reqWriteprotect, 0xc018aa06, 0xc018aa06},
		{"USERFAULTFD_IOC_NEW", reqDevNew, 0xaa00, 0x2000aa00},
	} {
		want := tc.generic
		if alt {
			want = tc.want
		}
		if tc.got != want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, want)
		}
	}
}

// A pagefault message as the kernel writes it: event 0x12, flags at byte 8,
// address at 16, thread id at 24.
func TestMsg_Decode(t *testing.T) {
	var m Msg
	b := unsafe.Slice((*byte)(unsafe.Pointer(&m)), msgSize)
	b[0] = 0x12
	binary.NativeEndian.PutUint64(b[8:], 3)
	binary.NativeEndian.PutUint64(b[16:], 0x7f001000)
	binary.NativeEndian.PutUint32(b[24:], 4242)
	f := m.Fault()
	if m.Event != EventPagefault || f.Flags != FaultWrite|FaultWP || f.Addr != 0x7f001000 || f.TID != 4242 {
		t.Fatalf("decoded %v as %+v", m, f)
	}
	if got := m.String(); got != "pagefault 0x7f001000 write|wp tid 4242" {
		t.Errorf("String() = %q", got)
	}
	b[0] = 0x14
	binary.NativeEndian.PutUint64(b[24:], 0x2000)
	if from, to, n := m.Remap(); from != 3 || to != 0x7f001000 || n != 0x2000 {
		t.Errorf("remap decoded as %#x %#x %#x", from, to, n)
	}
}
