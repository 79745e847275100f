// Package nbdclient is the smallest NBD client daxsnap needs for its demo
// and its tests: fixed newstyle handshake, NBD_OPT_GO, then one request at
// a time with simple replies (NetworkBlockDevice/nbd doc/proto.md). Real
// work wants qemu-img, nbdcopy or the kernel's nbd-client.
package nbdclient

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// Client is one connection to one export. It is not safe for concurrent use.
type Client struct {
	conn   net.Conn
	r      *bufio.Reader
	size   int64
	cookie uint64
}

// NBD protocol numbers the client uses.
const (
	nbdMagic         = 0x4e42444d41474943 // "NBDMAGIC"
	nbdOptMagic      = 0x49484156454F5054 // "IHAVEOPT"
	nbdRepMagic      = 0x3e889045565a9
	nbdRequestMagic  = 0x25609513
	nbdSimpleMagic   = 0x67446698
	nbdFixedNewstyle = 1 << 0
	nbdNoZeroes      = 1 << 1
	nbdOptGo         = 7
	nbdRepAck        = 1
	nbdRepInfo       = 3
	nbdInfoExport    = 0
	nbdCmdRead       = 0
	nbdCmdWrite      = 1
	nbdCmdDisc       = 2
	nbdCmdFlush      = 3
)

// Dial connects to network/addr ("unix" or "tcp") and opens export name.
func Dial(network, addr, name string) (*Client, error) {
	conn, err := net.Dial(network, addr)
	if err != nil {
		return nil, fmt.Errorf("nbd: connect to %s: %w", addr, err)
	}
	c := &Client{conn: conn, r: bufio.NewReader(conn)}
	if err := c.handshake(name); err != nil {
		conn.Close()
		return nil, fmt.Errorf("nbd: open export %q at %s: %w", name, addr, err)
	}
	return c, nil
}

func (c *Client) handshake(name string) error {
	var greet struct {
		Magic, Opt uint64
		Flags      uint16
	}
	if err := binary.Read(c.r, binary.BigEndian, &greet); err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if greet.Magic != nbdMagic || greet.Opt != nbdOptMagic || greet.Flags&nbdFixedNewstyle == 0 {
		return errors.New("server does not speak fixed newstyle NBD")
	}
	flags := uint32(nbdFixedNewstyle) | uint32(greet.Flags&nbdNoZeroes)
	opt := binary.BigEndian.AppendUint32(nil, flags)
	opt = binary.BigEndian.AppendUint64(opt, nbdOptMagic)
	opt = binary.BigEndian.AppendUint32(opt, nbdOptGo)
	opt = binary.BigEndian.AppendUint32(opt, uint32(4+len(name)+2))
	opt = binary.BigEndian.AppendUint32(opt, uint32(len(name)))
	opt = append(opt, name...)
	opt = binary.BigEndian.AppendUint16(opt, 0) // no information requests
	if _, err := c.conn.Write(opt); err != nil {
		return err
	}
	return c.goReplies()
}

// goReplies reads option replies up to NBD_REP_ACK, keeping the size.
func (c *Client) goReplies() error {
	for {
		var h struct {
			Magic          uint64
			Opt, Typ, Size uint32
		}
		if err := binary.Read(c.r, binary.BigEndian, &h); err != nil {
			return fmt.Errorf("read option reply: %w", err)
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
			return fmt.Errorf("server refused (error %#x): %s", h.Typ, data)
		case h.Typ == nbdRepInfo && len(data) >= 12 && binary.BigEndian.Uint16(data) == nbdInfoExport:
			c.size = int64(binary.BigEndian.Uint64(data[2:]))
		}
	}
}

// do sends one request and waits for its simple reply, reading len(rd)
// bytes of data for a read.
func (c *Client) do(cmd uint16, off int64, length int, wr, rd []byte) error {
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
		return fmt.Errorf("read reply: %w", err)
	}
	if rep.Magic != nbdSimpleMagic || rep.Cookie != c.cookie {
		return errors.New("unexpected reply")
	}
	if rep.Errno != 0 {
		return fmt.Errorf("server answered errno %d", rep.Errno)
	}
	_, err := io.ReadFull(c.r, rd)
	return err
}

// Size is the export's size, from the server's NBD_INFO_EXPORT.
func (c *Client) Size() int64 { return c.size }

// ReadAt reads len(p) bytes at off.
func (c *Client) ReadAt(p []byte, off int64) error { return c.do(nbdCmdRead, off, len(p), nil, p) }

// WriteAt writes p at off; it is acknowledged, not yet flushed.
func (c *Client) WriteAt(p []byte, off int64) error {
	return c.do(nbdCmdWrite, off, len(p), p, nil)
}

// Flush makes every acknowledged write durable (NBD_CMD_FLUSH).
func (c *Client) Flush() error { return c.do(nbdCmdFlush, 0, 0, nil, nil) }

// Close disconnects politely.
func (c *Client) Close() error {
	c.cookie++
	req := binary.BigEndian.AppendUint32(nil, nbdRequestMagic)
	req = binary.BigEndian.AppendUint16(req, 0)
	req = binary.BigEndian.AppendUint16(req, nbdCmdDisc)
	req = binary.BigEndian.AppendUint64(req, c.cookie)
	req = append(req, make([]byte, 12)...)
	c.conn.Write(req)
	return c.conn.Close()
}
