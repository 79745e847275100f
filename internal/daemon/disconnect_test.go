package daemon_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// nbdOpen connects to sock and opens export name with NBD_OPT_GO, then
// leaves the connection idle in transmission.
func nbdOpen(t *testing.T, sock, name string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var greet [18]byte
	if _, err := io.ReadFull(c, greet[:]); err != nil {
		t.Fatalf("NBD greeting: %v", err)
	}
	b := binary.BigEndian.AppendUint32(nil, 1|2) // fixed newstyle, no zeroes
	b = append(b, "IHAVEOPT"...)
	b = binary.BigEndian.AppendUint32(b, 7) // NBD_OPT_GO
	b = binary.BigEndian.AppendUint32(b, uint32(4+len(name)+2))
	b = binary.BigEndian.AppendUint32(b, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, 0)
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	for {
		var h [20]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			t.Fatalf("NBD_OPT_GO reply: %v", err)
		}
		typ, n := binary.BigEndian.Uint32(h[12:]), binary.BigEndian.Uint32(h[16:])
		data := make([]byte, n)
		if _, err := io.ReadFull(c, data); err != nil {
			t.Fatal(err)
		}
		switch {
		case typ == 1: // NBD_REP_ACK
			return c
		case typ&(1<<31) != 0:
			t.Fatalf("NBD_OPT_GO %s refused: %s", name, data)
		}
	}
}

// Ensure that root can take a device back from an idle NBD client that
// keeps it busy: info names the client by pid and uid, remove refuses,
// disconnect closes the connection, and remove then works.
func TestDaemon_disconnectNBD(t *testing.T) {
	testutil.RequireRoot(t)
	e := newEnv(t)
	e.create("vol", "0 8 zero")
	conn := nbdOpen(t, filepath.Join(e.cfg.StateDir, daemon.NBDSocketName), "vol")
	in := e.info("vol")
	if len(in.Holders) != 1 || in.Holders[0].Kind != "nbd" || in.Holders[0].PID != os.Getpid() || in.Holders[0].UID != 0 {
		t.Fatalf("holders of vol: %+v, want one NBD client, pid %d uid 0", in.Holders, os.Getpid())
	}
	if err := e.c.Remove(bg, "vol", wire.Remove{}); err == nil {
		t.Fatal("remove of a device an NBD client holds succeeded; the test proves nothing")
	}
	got, err := e.c.Disconnect(bg, "vol")
	if err != nil || got.NBD != 1 {
		t.Fatalf("disconnect: %+v, %v; want one NBD connection closed", got, err)
	}
	if in := e.info("vol"); len(in.Holders) != 0 || in.OpenCount != 0 {
		t.Fatalf("after disconnect: holders %+v, open count %d", in.Holders, in.OpenCount)
	}
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("the NBD client's connection is still open")
	}
	e.must("remove after disconnect", e.c.Remove(bg, "vol", wire.Remove{}))
}

// Ensure that disconnect revokes open FUSE files: the open file's reads
// fail with ENXIO afterwards, and the device is no longer busy.
func TestDaemon_disconnectFUSE(t *testing.T) {
	e := newFUSEEnv(t)
	e.create("vol", "0 8 zero")
	f, err := os.OpenFile(filepath.Join(e.d.FUSEDir(), "vol"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 512)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatalf("read before disconnect: %v", err)
	}
	if in := e.info("vol"); len(in.Holders) != 1 || in.Holders[0].Kind != "fuse" {
		t.Fatalf("holders of vol: %+v, want one FUSE file", in.Holders)
	}
	got, err := e.c.Disconnect(bg, "vol")
	if err != nil || got.FUSEFiles != 1 {
		t.Fatalf("disconnect: %+v, %v; want one FUSE file revoked", got, err)
	}
	if _, err := f.ReadAt(buf, 0); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("read after disconnect: %v, want ENXIO", err)
	}
	if _, err := f.WriteAt(buf, 0); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("write after disconnect: %v, want ENXIO", err)
	}
	if in := e.info("vol"); len(in.Holders) != 0 || in.OpenCount != 0 {
		t.Fatalf("after disconnect: holders %+v, open count %d", in.Holders, in.OpenCount)
	}
	e.must("remove after disconnect", e.c.Remove(bg, "vol", wire.Remove{}))
}
