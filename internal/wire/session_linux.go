package wire

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"syscall"
)

// SendSession sends m as one packet on a SOCK_SEQPACKET connection, with
// fds attached. The caller still owns fds.
func SendSession(c *net.UnixConn, m SessionMsg, fds ...int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("session: encode %s: %w", m.Op, err)
	}
	if len(b) > MaxSessionPacket {
		return fmt.Errorf("session: %s message of %d bytes exceeds %d", m.Op, len(b), MaxSessionPacket)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	n, oobn, err := c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("session: send %s: %w", m.Op, err)
	}
	if n != len(b) || oobn != len(oob) {
		return fmt.Errorf("session: send %s: short write (%d of %d bytes, %d of %d control bytes)", m.Op, n, len(b), oobn, len(oob))
	}
	return nil
}

// maxSessionFDs bounds the descriptors one packet may carry.
const maxSessionFDs = 253 // SCM_MAX_FD

// RecvSession reads one packet into buf (at least MaxSessionPacket bytes;
// the message does not keep it). Descriptors that came with it are
// returned, close-on-exec, owned by the caller; when the message cannot be
// decoded they are closed. When the peer has closed the connection the
// error wraps io.EOF.
func RecvSession(c *net.UnixConn, buf []byte) (SessionMsg, []int, error) {
	if len(buf) < MaxSessionPacket {
		return SessionMsg{}, nil, fmt.Errorf("session: receive buffer of %d bytes, want %d", len(buf), MaxSessionPacket)
	}
	oob := make([]byte, syscall.CmsgSpace(maxSessionFDs*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return SessionMsg{}, nil, err
	}
	var fds []int
	if oobn > 0 {
		cmsgs, perr := syscall.ParseSocketControlMessage(oob[:oobn])
		if perr != nil {
			return SessionMsg{}, nil, fmt.Errorf("session: control message: %w", perr)
		}
		for _, cm := range cmsgs {
			if got, err := syscall.ParseUnixRights(&cm); err == nil {
				fds = append(fds, got...)
			}
		}
		for _, fd := range fds {
			syscall.CloseOnExec(fd)
		}
	}
	fail := func(err error) (SessionMsg, []int, error) {
		for _, fd := range fds {
			syscall.Close(fd)
		}
		return SessionMsg{}, nil, err
	}
	if flags&(syscall.MSG_TRUNC|syscall.MSG_CTRUNC) != 0 {
		return fail(fmt.Errorf("session: packet truncated (flags %#x): larger than %d bytes or more than %d descriptors", flags, MaxSessionPacket, maxSessionFDs))
	}
	if n == 0 {
		return fail(errEmpty)
	}
	var m SessionMsg
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		return fail(fmt.Errorf("session: decode packet of %d bytes: %w", n, err))
	}
	return m, fds, nil
}

var errEmpty = fmt.Errorf("session: empty packet: %w", io.EOF)
