package wire_test

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/daxsnap/daxsnap/internal/wire"
)

func seqpacketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "seqpacket")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

func TestSession_RoundTripWithDescriptors(t *testing.T) {
	a, b := seqpacketPair(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	sent := wire.SessionMsg{Op: wire.OpGrant, ID: 7, Grant: &wire.MapGrant{PageSize: 4096, WriteProtect: true,
		Pieces: []wire.MapPiece{{Off: 0, Len: 8192, FD: 0, FileOffset: 4096}, {Off: 8192, Len: 4096, FD: 1}}}}
	if err := wire.SendSession(a, sent, int(r.Fd()), int(w.Fd())); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, wire.MaxSessionPacket)
	got, fds, err := wire.RecvSession(b, buf)
	if err != nil {
		t.Fatal(err)
	}
	if got.Op != sent.Op || got.ID != 7 || got.Grant == nil || len(got.Grant.Pieces) != 2 || got.Grant.Pieces[0].FileOffset != 4096 {
		t.Fatalf("received %+v, want %+v", got, sent)
	}
	if len(fds) != 2 {
		t.Fatalf("received %d descriptors, want 2", len(fds))
	}
	// The descriptors are the pipe's ends: write on the received write
	// end, read on the original read end.
	if _, err := syscall.Write(fds[1], []byte("x")); err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	if _, err := r.Read(one); err != nil || one[0] != 'x' {
		t.Fatalf("read %q, %v through the passed descriptor", one, err)
	}
	for _, fd := range fds {
		if flags, err := fcntl(fd, syscall.F_GETFD); err != nil || flags&syscall.FD_CLOEXEC == 0 {
			t.Errorf("received descriptor %d: flags %#x, %v; want close-on-exec", fd, flags, err)
		}
		syscall.Close(fd)
	}
}

func fcntl(fd, cmd int) (int, error) {
	r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), uintptr(cmd), 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

func TestSession_BadPackets(t *testing.T) {
	a, b := seqpacketPair(t)
	buf := make([]byte, wire.MaxSessionPacket)
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	// Garbage with a descriptor: an error, and the descriptor is closed.
	if _, _, err := a.WriteMsgUnix([]byte("{not json"), syscall.UnixRights(int(w.Fd())), nil); err != nil {
		t.Fatal(err)
	}
	if _, fds, err := wire.RecvSession(b, buf); err == nil || fds != nil || !strings.Contains(err.Error(), "decode") {
		t.Fatalf("garbage: fds %v, err %v; want a decode error and no descriptors", fds, err)
	}
	// Too large for the buffer: truncated, refused.
	big := make([]byte, wire.MaxSessionPacket+1)
	if _, _, err := a.WriteMsgUnix(big, nil, nil); err == nil {
		if _, _, err := wire.RecvSession(b, buf); err == nil || !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("oversized packet: %v, want truncated", err)
		}
	}
	if _, _, err := wire.RecvSession(b, make([]byte, 10)); err == nil {
		t.Fatal("a small buffer was accepted")
	}
	a.Close()
	if _, _, err := wire.RecvSession(b, buf); !errors.Is(err, io.EOF) {
		t.Fatalf("after the peer closed: %v, want io.EOF", err)
	}
}
