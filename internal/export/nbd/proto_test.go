package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
)

func TestDecodeRequest_roundTrip(t *testing.T) {
	r := request{flags: cmdFlagFUA, typ: cmdWrite, cookie: 0xdeadbeefcafe, offset: 1 << 40, length: 4096}
	b := appendRequest(nil, r)
	if len(b) != requestSize {
		t.Fatalf("encoded request is %d bytes, want %d", len(b), requestSize)
	}
	got, err := decodeRequest(b)
	if err != nil || got != r {
		t.Fatalf("decode(encode(%+v)) = %+v, %v", r, got, err)
	}
	b[0] ^= 1
	if _, err := decodeRequest(b); !errors.Is(err, errBadMagic) {
		t.Fatalf("bad magic: err %v, want errBadMagic", err)
	}
	if _, err := decodeRequest(b[:27]); err == nil {
		t.Fatal("27-byte request decoded")
	}
}

func TestParseInfoRequest(t *testing.T) {
	good := appendInfoRequest(nil, infoRequest{name: "disk", infos: []uint16{infoName, infoBlockSize}})
	cases := []struct {
		name string
		data []byte
		ok   bool
	}{
		{"good", good, true},
		{"empty name no infos", appendInfoRequest(nil, infoRequest{}), true},
		{"short", []byte{0, 0, 0, 0, 0}, false},
		{"name past end", []byte{0, 0, 0, 9, 'a', 0, 0}, false},
		{"count mismatch", append(good, 0), false},
		{"count too small", good[:len(good)-2], false},
		{"NUL in name", appendInfoRequest(nil, infoRequest{name: "a\x00b"}), false},
		{"name too long", appendInfoRequest(nil, infoRequest{name: string(make1(4097, 'x'))}), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseInfoRequest(tc.data)
			if tc.ok != (err == nil) {
				t.Fatalf("parse: %v, want ok=%v", err, tc.ok)
			}
			if err == nil && !bytes.Equal(appendInfoRequest(nil, r), tc.data) {
				t.Fatalf("re-encoding %+v differs from the input", r)
			}
			if err != nil && !errors.Is(err, errOptSyntax) {
				t.Fatalf("error %v is not errOptSyntax", err)
			}
		})
	}
}

func TestParseMetaRequest(t *testing.T) {
	good := appendMetaRequest(nil, metaRequest{name: "disk", queries: []string{"base:allocation", "qemu:dirty-bitmap:x"}})
	cases := []struct {
		name string
		data []byte
		ok   bool
	}{
		{"good", good, true},
		{"no queries", appendMetaRequest(nil, metaRequest{name: "x"}), true},
		{"no count", []byte{0, 0, 0, 0}, false},
		{"trailing byte", append(good, 0), false},
		{"truncated query", good[:len(good)-1], false},
		{"huge count", []byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, false},
		{"name length past end", []byte{0xff, 0, 0, 0}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseMetaRequest(tc.data)
			if tc.ok != (err == nil) {
				t.Fatalf("parse: %v, want ok=%v", err, tc.ok)
			}
			if err == nil && !bytes.Equal(appendMetaRequest(nil, r), tc.data) {
				t.Fatalf("re-encoding %+v differs from the input", r)
			}
		})
	}
}

func make1(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }

func TestSession_validate(t *testing.T) {
	const size = 1 << 20
	rw := session{size: size, minBlock: 512, structured: true, metaAlloc: true,
		tflags: tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes | tflagSendDF | tflagSendFastZero | tflagSendCache}
	ro := rw
	ro.tflags = tflagHasFlags | tflagReadOnly | tflagSendFlush | tflagSendFUA
	simple := rw
	simple.structured, simple.metaAlloc = false, false
	strict := rw
	strict.strictAlign = true
	noFast := rw
	noFast.tflags &^= tflagSendFastZero
	cases := []struct {
		name   string
		s      session
		r      request
		errno  uint32
		hangup bool
	}{
		{"read ok", rw, request{typ: cmdRead, offset: 0, length: 4096}, 0, false},
		{"read to the end", rw, request{typ: cmdRead, offset: size - 512, length: 512}, 0, false},
		{"read past end", rw, request{typ: cmdRead, offset: size - 512, length: 1024}, errInval, false},
		{"read offset past end", rw, request{typ: cmdRead, offset: size + 1}, errInval, false},
		{"read offset wraps", rw, request{typ: cmdRead, offset: ^uint64(0) - 10, length: 4096}, errInval, false},
		{"write past end", rw, request{typ: cmdWrite, offset: size, length: 512}, errNoSpc, false},
		{"zeroes past end", rw, request{typ: cmdWriteZeroes, offset: size, length: 512}, errNoSpc, false},
		{"trim past end", rw, request{typ: cmdTrim, offset: size, length: 512}, errInval, false},
		{"cache past end", rw, request{typ: cmdCache, offset: size, length: 512}, errInval, false},
		{"status past end", rw, request{typ: cmdBlockStatus, offset: size, length: 512}, errInval, false},
		{"read too large", rw, request{typ: cmdRead, length: maxPayload + 1}, errInval, false},
		{"write too large", rw, request{typ: cmdWrite, length: maxPayload + 1}, errInval, false},
		{"write too large to skip", rw, request{typ: cmdWrite, length: maxSkip + 1}, errInval, true},
		{"trim larger than payload", rw, request{typ: cmdTrim, length: size}, 0, false},
		{"unknown command", rw, request{typ: 9}, errInval, false},
		{"resize", rw, request{typ: 8}, errInval, false},
		{"unknown flag", rw, request{typ: cmdRead, flags: 1 << 7, length: 512}, errInval, false},
		{"no hole on write", rw, request{typ: cmdWrite, flags: cmdFlagNoHole, length: 512}, errInval, false},
		{"fast zero on trim", rw, request{typ: cmdTrim, flags: cmdFlagFastZero, length: 512}, errInval, false},
		{"fast zero not advertised", noFast, request{typ: cmdWriteZeroes, flags: cmdFlagFastZero, length: 512}, errInval, false},
		{"fast zero", rw, request{typ: cmdWriteZeroes, flags: cmdFlagFastZero | cmdFlagNoHole, length: 512}, 0, false},
		{"df on read", rw, request{typ: cmdRead, flags: cmdFlagDF, length: 512}, 0, false},
		{"df without structured", simple, request{typ: cmdRead, flags: cmdFlagDF, length: 512}, errInval, false},
		{"df on write", rw, request{typ: cmdWrite, flags: cmdFlagDF, length: 512}, errInval, false},
		{"req one on read", rw, request{typ: cmdRead, flags: cmdFlagReqOne, length: 512}, errInval, false},
		{"fua on read", rw, request{typ: cmdRead, flags: cmdFlagFUA, length: 512}, 0, false},
		{"flush", rw, request{typ: cmdFlush}, 0, false},
		{"flush with offset", rw, request{typ: cmdFlush, offset: 512}, errInval, false},
		{"flush with length", rw, request{typ: cmdFlush, length: 512}, errInval, false},
		{"status", rw, request{typ: cmdBlockStatus, flags: cmdFlagReqOne, length: 512}, 0, false},
		{"status length 0", rw, request{typ: cmdBlockStatus}, errInval, false},
		{"status without meta", simple, request{typ: cmdBlockStatus, length: 512}, errInval, false},
		{"read-only write", ro, request{typ: cmdWrite, length: 512}, errPerm, false},
		{"read-only trim", ro, request{typ: cmdTrim, length: 512}, errPerm, false},
		{"read-only zeroes", ro, request{typ: cmdWriteZeroes, length: 512}, errPerm, false},
		{"read-only read", ro, request{typ: cmdRead, length: 512}, 0, false},
		{"read-only flush", ro, request{typ: cmdFlush}, 0, false},
		{"unaligned lenient", rw, request{typ: cmdRead, offset: 1, length: 3}, 0, false},
		{"unaligned strict", strict, request{typ: cmdRead, offset: 1, length: 512}, errInval, false},
		{"unaligned length strict", strict, request{typ: cmdWrite, offset: 512, length: 100}, errInval, false},
		{"zero length read", rw, request{typ: cmdRead, offset: size}, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.s.validate(&tc.r)
			if v.errno != tc.errno || v.hangup != tc.hangup {
				t.Fatalf("validate(%+v) = errno %d hangup %v (%s), want errno %d hangup %v", tc.r, v.errno, v.hangup, v.msg, tc.errno, tc.hangup)
			}
			if v.errno != 0 && v.msg == "" {
				t.Fatal("rejection without a message")
			}
		})
	}
}

func TestNBDErrno(t *testing.T) {
	read := &request{typ: cmdRead}
	write := &request{typ: cmdWrite}
	cases := []struct {
		err  error
		r    *request
		want uint32
	}{
		{nil, read, 0},
		{dm.ErrIO, read, errIO},
		{fmt.Errorf("wrapped: %w", dm.ErrReadOnly), write, errPerm},
		{syscall.EROFS, write, errPerm},
		{dm.ErrNoSpace, write, errNoSpc},
		{syscall.EDQUOT, write, errNoSpc},
		{syscall.EFBIG, write, errNoSpc},
		{dm.ErrOutOfRange, write, errNoSpc},
		{dm.ErrOutOfRange, read, errInval},
		{dm.ErrOutOfRange, &request{typ: cmdTrim}, errInval},
		{dm.ErrInvalidArgument, read, errInval},
		{syscall.ENOMEM, read, errNoMem},
		{dm.ErrNotSupported, &request{typ: cmdWriteZeroes, flags: cmdFlagFastZero}, errNotSup},
		{dm.ErrNotSupported, &request{typ: cmdWriteZeroes}, errInval},
		{syscall.EOVERFLOW, &request{typ: cmdRead, flags: cmdFlagDF}, errOverflow},
		{syscall.EOVERFLOW, read, errInval},
		{syscall.ESHUTDOWN, read, errShutdown},
		{dm.ErrBusy, read, errIO},
		{dm.ErrNotFound, read, errIO},
		{io.ErrUnexpectedEOF, read, errIO},
		{errors.New("anything"), read, errIO},
	}
	for _, tc := range cases {
		if got := nbdErrno(tc.err, tc.r); got != tc.want {
			t.Errorf("nbdErrno(%v, %s) = %d, want %d", tc.err, cmdName(tc.r.typ), got, tc.want)
		}
	}
}

func TestBufPool(t *testing.T) {
	for _, n := range []int{0, 1, 4096, 4097, 1 << 20, maxPayload} {
		p := getBuf(n)
		if len(*p) != n || cap(*p) < n || cap(*p)&(cap(*p)-1) != 0 {
			t.Fatalf("getBuf(%d): len %d cap %d", n, len(*p), cap(*p))
		}
		putBuf(p)
	}
}

// FuzzRequest decodes arbitrary bytes as a request header, option header
// and option payloads: nothing panics, whatever decodes re-encodes to the
// same bytes, and a request that validates lies inside the export.
func FuzzRequest(f *testing.F) {
	f.Add(appendRequest(nil, request{typ: cmdRead, cookie: 1, offset: 4096, length: 4096}))
	f.Add(appendRequest(nil, request{typ: cmdWrite, flags: cmdFlagFUA, length: maxSkip + 1}))
	f.Add(appendRequest(nil, request{typ: cmdBlockStatus, flags: cmdFlagReqOne, offset: 1 << 20, length: 1}))
	f.Add(appendOptHeader(nil, optHeader{option: optGo, length: 10}))
	f.Add(appendInfoRequest(nil, infoRequest{name: "x", infos: []uint16{3}}))
	f.Add(appendMetaRequest(nil, metaRequest{name: "x", queries: []string{"base:allocation"}}))
	f.Add([]byte{})
	sessions := []session{
		{size: 1 << 20, minBlock: 512, tflags: tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes},
		{size: 1 << 20, minBlock: 512, structured: true, metaAlloc: true, strictAlign: true,
			tflags: tflagHasFlags | tflagReadOnly | tflagSendDF},
		{size: 0, minBlock: 1},
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := decodeRequest(b); err == nil {
			if enc := appendRequest(nil, r); !bytes.Equal(enc, b[:requestSize]) {
				t.Fatalf("request %+v re-encodes to %x, input %x", r, enc, b[:requestSize])
			}
			for _, s := range sessions {
				checkVerdict(t, &s, &r)
			}
		}
		if h, err := decodeOptHeader(b); err == nil {
			if enc := appendOptHeader(nil, h); !bytes.Equal(enc, b[:optHeaderSize]) {
				t.Fatalf("option header %+v re-encodes to %x", h, enc)
			}
		}
		if r, err := parseInfoRequest(b); err == nil {
			if enc := appendInfoRequest(nil, r); !bytes.Equal(enc, b) {
				t.Fatalf("info request %+v re-encodes to %x, input %x", r, enc, b)
			}
		}
		if r, err := parseMetaRequest(b); err == nil {
			if enc := appendMetaRequest(nil, r); !bytes.Equal(enc, b) {
				t.Fatalf("meta request %+v re-encodes to %x, input %x", r, enc, b)
			}
		}
	})
}

// checkVerdict states what validate guarantees to the rest of the server.
func checkVerdict(t *testing.T, s *session, r *request) {
	v := s.validate(r)
	switch v.errno {
	case 0:
		if r.typ > cmdBlockStatus || r.flags&^cmdKnownFlags != 0 {
			t.Fatalf("accepted unknown command or flags: %+v", r)
		}
		if r.offset > s.size || uint64(r.length) > s.size-r.offset {
			t.Fatalf("accepted out-of-range %+v for size %d", r, s.size)
		}
		if (r.typ == cmdRead || r.typ == cmdWrite) && r.length > maxPayload {
			t.Fatalf("accepted oversized %+v", r)
		}
		if s.tflags&tflagReadOnly != 0 && (r.typ == cmdWrite || r.typ == cmdTrim || r.typ == cmdWriteZeroes) {
			t.Fatalf("accepted a write on a read-only export: %+v", r)
		}
		if v.hangup {
			t.Fatal("hangup on an accepted request")
		}
	case errPerm, errInval, errNoSpc:
		if v.msg == "" {
			t.Fatalf("rejection %d without message", v.errno)
		}
		if v.hangup != (r.typ == cmdWrite && r.length > maxSkip) {
			t.Fatalf("hangup %v for %+v", v.hangup, r)
		}
	default:
		t.Fatalf("validate returned errno %d", v.errno)
	}
}

func TestBlockDescriptorWire(t *testing.T) {
	b := appendDescriptor(nil, 4096, stateHole|stateZero)
	if binary.BigEndian.Uint32(b) != 4096 || binary.BigEndian.Uint32(b[4:]) != 3 {
		t.Fatalf("descriptor %x", b)
	}
}
