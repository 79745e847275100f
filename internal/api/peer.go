package api

import (
	"context"
	"fmt"
	"net"
	"net/http"

	"golang.org/x/sys/unix"
)

// Peer is who is on the other end of a connection (SO_PEERCRED).
type Peer struct {
	PID, UID, GID int
}

type peerKey struct{}

// withPeer stores the peer credentials of a unix-socket connection in
// the connection's context (http.Server.ConnContext).
func withPeer(ctx context.Context, c net.Conn) context.Context {
	p, ok := peerOf(c)
	if !ok {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, p)
}

// peerOf reads the credentials of c's peer (SO_PEERCRED); false if c is
// not a unix-socket connection or they cannot be read.
func peerOf(c net.Conn) (Peer, bool) {
	if pc, ok := c.(*peerConn); ok {
		return pc.peer, pc.known
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, false
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return Peer{}, false
	}
	return Peer{PID: int(cred.Pid), UID: int(cred.Uid), GID: int(cred.Gid)}, true
}

func peerFrom(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	if !ok {
		return Peer{PID: -1, UID: -1, GID: -1}, false
	}
	return p, true
}

// authorize lets anyone read state; changes need root or the daemon's
// uid. Reading a device's data has its own rule too (authorizeRead).
func (s *Server) authorize(method string, p Peer, known bool) error {
	if method == http.MethodGet || method == http.MethodHead {
		return nil
	}
	if !known {
		return fmt.Errorf("%w: %s needs the caller's credentials, which only the unix socket carries: connect through it",
			ErrPermission, method)
	}
	if p.UID == 0 || p.UID == s.owner {
		return nil
	}
	return fmt.Errorf("%w: uid %d (pid %d) may only read; changes need root or uid %d, which runs the daemon: use sudo or that user",
		ErrPermission, p.UID, p.PID, s.owner)
}
