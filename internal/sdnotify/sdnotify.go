// Package sdnotify tells a service manager (systemd) how the daemon is
// doing, with the sd_notify protocol: one datagram of newline-separated
// VAR=VALUE lines on the unix socket named by $NOTIFY_SOCKET. Without
// that variable it does nothing, so the daemon runs the same outside
// systemd. The protocol is declared stable by systemd; see sd_notify(3).
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// SocketEnv names the variable the service manager sets to its socket.
const SocketEnv = "NOTIFY_SOCKET"

// Messages the daemon sends.
const (
	// Ready says the daemon's sockets accept (Type=notify waits for it).
	Ready = "READY=1"
	// Stopping says a stop began: the daemon drains, then exits.
	Stopping = "STOPPING=1"
)

// Notify sends state (lines such as Ready, "STATUS=...") to the socket
// in $NOTIFY_SOCKET. It reports false, nil when the variable is unset.
func Notify(state string) (bool, error) {
	addr := os.Getenv(SocketEnv)
	if addr == "" {
		return false, nil
	}
	return true, Send(addr, state)
}

// Send sends state to the notify socket addr: a path, or "@name" for a
// Linux abstract socket (Go maps the leading @ to the NUL the kernel
// expects, and counts the address length without a trailing NUL).
func Send(addr, state string) error {
	if !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, "@") {
		return fmt.Errorf("$%s=%q: only unix socket paths and @abstract names are supported; set it to one, or unset it to run without notifying", SocketEnv, addr)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify the service manager on %s: %w", addr, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify the service manager on %s: %w", addr, err)
	}
	return nil
}

// Status is a STATUS= line: one line of text the manager shows
// (systemctl status).
func Status(text string) string {
	return "STATUS=" + strings.Join(strings.Fields(text), " ")
}
