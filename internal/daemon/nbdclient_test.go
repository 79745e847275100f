package daemon_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// testNBD is a minimal NBD client for tests that must see exactly which
// requests were acknowledged: fixed newstyle handshake, NBD_OPT_GO, one
// request at a time, simple replies (NetworkBlockDevice/nbd doc/proto.md).
type testNBD struct {
	conn   net.Conn
	r      *bufio.Reader
	cookie uint64
}

const (
	nbdMagic        = 0x4e42444d41474943
	nbdOptMagic     = 0x49484156454F5054
	nbdRepMagic     = 0x3e889045565a9
	nbdRequestMagic = 0x25609513
	nbdSimpleMagic  = 0x67446698
	nbdOptGo        = 7
	nbdRepAck       = 1
	nbdCmdRead      = 0
	nbdCmdWrite     = 1
	nbdCmdDisc      = 2
	nbdCmdFlush     = 3
)

func dialTestNBD(socket, export string) (*testNBD, error) {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return nil, err
	}
	c := &testNBD{conn: conn, r: bufio.NewReader(conn)}
	if err := c.handshake(export); err != nil {
		conn.Close()
		return nil, fmt.Errorf("nbd handshake for %q: %w", export, err)
	}
	return c, nil
}

func (c *testNBD) handshake(name string) error {
	var greet struct {
		Magic, Opt uint64
		Flags      uint16
	}
	if err := binary.Read(c.r, binary.BigEndian, &greet); err != nil {
		return err
	}
	if greet.Magic != nbdMagic || greet.Opt != nbdOptMagic || greet.Flags&1 == 0 {
		return errors.New("not fixed newstyle")
	}
	opt := binary.BigEndian.AppendUint32(nil, 1|uint32(greet.Flags&2))
	opt = binary.BigEndian.AppendUint64(opt, nbdOptMagic)
	opt = binary.BigEndian.AppendUint32(opt, nbdOptGo)
	opt = binary.BigEndian.AppendUint32(opt, uint32(4+len(name)+2))
	opt = binary.BigEndian.AppendUint32(opt, uint32(len(name)))
	opt = append(opt, name...)
	opt = binary.BigEndian.AppendUint16(opt, 0)
	if _, err := c.conn.Write(opt); err != nil {
		return err
	}
	for {
		var h struct {
			Magic          uint64
			Opt, Typ, Size uint32
		}
		if err := binary.Read(c.r, binary.BigEndian, &h); err != nil {
			return err
		}
		if h.Magic != nbdRepMagic || h.Size > 1<<20 {
			return errors.New("malformed option reply")
		}
		data := make([]byte, h.Size)
		if _, err := io.ReadFull(c.r, data); err != nil {
			return err
		}
		switch {
		case h.Typ == nbdRepAck:
			return nil
		case h.Typ&(1<<31) != 0:
			return fmt.Errorf("refused (%#x): %s", h.Typ, data)
		}
	}
}

func (c *testNBD) do(cmd uint16, off int64, length int, wr, rd []byte) error {
	c.cookie++
	req := binary.BigEndian.AppendUint32(nil, nbdRequestMagic)
	req = binary.BigEndian.AppendUint16(req, 0)
	req = binary.BigEndian.AppendUint16(req, cmd)
	req = binary.BigEndian.AppendUint64(req, c.cookie)
	req = binary.BigEndian.AppendUint64(req, uint64(off))
	req = binary.BigEndian.AppendUint32(req, uint32(length))
	if _, err := c.conn.Write(append(req, wr...)); err != nil {
		return err
	}
	var rep struct {
		Magic, Errno uint32
		Cookie       uint64
	}
	if err := binary.Read(c.r, binary.BigEndian, &rep); err != nil {
		return err
	}
	if rep.Magic != nbdSimpleMagic || rep.Cookie != c.cookie {
		return errors.New("unexpected reply")
	}
	if rep.Errno != 0 {
		return fmt.Errorf("errno %d", rep.Errno)
	}
	_, err := io.ReadFull(c.r, rd)
	return err
}

func (c *testNBD) WriteAt(p []byte, off int64) error { return c.do(nbdCmdWrite, off, len(p), p, nil) }
func (c *testNBD) ReadAt(p []byte, off int64) error  { return c.do(nbdCmdRead, off, len(p), nil, p) }
func (c *testNBD) Flush() error                      { return c.do(nbdCmdFlush, 0, 0, nil, nil) }

func (c *testNBD) Close() error {
	c.cookie++
	req := binary.BigEndian.AppendUint32(nil, nbdRequestMagic)
	req = binary.BigEndian.AppendUint16(req, 0)
	req = binary.BigEndian.AppendUint16(req, nbdCmdDisc)
	req = binary.BigEndian.AppendUint64(req, c.cookie)
	req = append(req, make([]byte, 12)...)
	c.conn.Write(req)
	return c.conn.Close()
}
