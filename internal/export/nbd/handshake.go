package nbd

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// Option data limits. Legitimate options are small (a name, a few
// queries); larger ones are skipped with NBD_REP_ERR_TOO_BIG, and ones
// too large to skip drop the connection.
const (
	maxOptionData = 64 << 10
	maxOptionSkip = 1 << 20
)

// negotiation is the option state that carries over to transmission.
type negotiation struct {
	structured bool
	metaName   string    // export named by the last NBD_OPT_SET_META_CONTEXT
	metaAlloc  bool      // that option selected base:allocation
	meta       []metaSel // and these other contexts (meta.go)
}

// outcome of one option.
type outcome int

const (
	stay     outcome = iota // keep negotiating
	transmit                // enter the transmission phase
	hangUp                  // close the connection
)

var errOptionSkipped = errors.New("option skipped")

// handshake runs fixed newstyle negotiation. It returns true when the
// connection has entered transmission with c.exp opened.
func (c *conn) handshake() bool {
	c.setDeadline(time.Now().Add(c.srv.opts.HandshakeTimeout))
	greet := binary.BigEndian.AppendUint64(nil, magicNBD)
	greet = binary.BigEndian.AppendUint64(greet, magicOpt)
	greet = binary.BigEndian.AppendUint16(greet, flagFixedNewstyle|flagNoZeroes)
	if _, err := c.bw.Write(greet); err != nil || !c.flush() {
		return false
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		c.log.Debug("nbd: no client flags", "err", err)
		return false
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&^clientKnownFlags != 0 {
		c.log.Info("nbd: client sent unknown flags; closing as the spec requires", "flags", fmt.Sprintf("0x%x", flags))
		return false
	}
	c.noZeroes = flags&clientNoZeroes != 0
	var n negotiation
	for {
		h, data, err := c.readOption()
		if errors.Is(err, errOptionSkipped) {
			if !c.flush() {
				return false
			}
			continue
		}
		if err != nil {
			c.log.Debug("nbd: handshake ended", "err", err)
			return false
		}
		out := c.option(&n, h, data)
		if !c.flush() || out == hangUp {
			return false
		}
		if out == transmit {
			c.setDeadline(time.Time{})
			c.growBuffers()
			return true
		}
	}
}

// readOption reads one option request. Oversized data is skipped and
// answered with NBD_REP_ERR_TOO_BIG (errOptionSkipped), unless it is
// too large to skip or belongs to NBD_OPT_EXPORT_NAME, which has no error
// reply.
func (c *conn) readOption() (optHeader, []byte, error) {
	var hb [optHeaderSize]byte
	if _, err := io.ReadFull(c.br, hb[:]); err != nil {
		return optHeader{}, nil, err
	}
	h, err := decodeOptHeader(hb[:])
	if err != nil {
		return h, nil, err
	}
	if h.length > maxOptionData {
		if h.option == optExportName || h.length > maxOptionSkip {
			return h, nil, fmt.Errorf("%s option with %d bytes of data: too large", optName(h.option), h.length)
		}
		if _, err := c.br.Discard(int(h.length)); err != nil {
			return h, nil, err
		}
		c.optError(h.option, repErrTooBig, "%s: %d bytes of option data; the limit is %d", optName(h.option), h.length, maxOptionData)
		return h, nil, errOptionSkipped
	}
	data := make([]byte, h.length)
	_, err = io.ReadFull(c.br, data)
	return h, data, err
}

// option answers one option request.
func (c *conn) option(n *negotiation, h optHeader, data []byte) outcome {
	if c.srv.closing.Load() && h.option != optAbort {
		if h.option == optExportName {
			return hangUp // no way to send an error
		}
		c.optError(h.option, repErrShutdown, "the server is shutting down")
		return stay
	}
	if c.tlsConf != nil && c.client.TLS == nil {
		switch h.option {
		case optStartTLS, optAbort:
		case optExportName:
			c.log.Info("nbd: EXPORT_NAME before STARTTLS on a socket that requires TLS; closing (the option has no error reply)")
			return hangUp
		default:
			c.optError(h.option, repErrTLSReqd, "this server requires TLS: negotiate it first (nbds:// URIs, --tls with qemu-nbd, tls-creds with qemu)")
			return stay
		}
	}
	switch h.option {
	case optExportName:
		return c.optExportName(n, data)
	case optAbort:
		c.optReply(h.option, repAck, nil)
		return hangUp
	case optList:
		c.optList(data)
	case optInfo, optGo:
		return c.optInfoGo(n, h.option, data)
	case optStructuredReply:
		if len(data) != 0 {
			c.optError(h.option, repErrInvalid, "STRUCTURED_REPLY takes no data, got %d bytes", len(data))
			return stay
		}
		n.structured = true
		c.optReply(h.option, repAck, nil)
	case optListMetaContext, optSetMetaContext:
		c.optMeta(n, h.option, data)
	case optStartTLS:
		return c.optStartTLS(n, data)
	default:
		c.optError(h.option, repErrUnsup, "%s is not supported by this server", optName(h.option))
	}
	return stay
}

func (c *conn) optExportName(n *negotiation, data []byte) outcome {
	name, err := checkString(data, "export name")
	if err != nil {
		c.log.Info("nbd: EXPORT_NAME refused; closing (the option has no error reply)", "err", err)
		return hangUp
	}
	exp, err := c.open(name)
	if err != nil {
		c.log.Info("nbd: EXPORT_NAME refused; closing (the option has no error reply)", "export", name, "err", err)
		return hangUp
	}
	c.enter(exp, c.sessionFor(exp, n, name))
	b := binary.BigEndian.AppendUint64(nil, c.sess.size)
	b = binary.BigEndian.AppendUint16(b, c.sess.tflags)
	if !c.noZeroes {
		b = append(b, make([]byte, 124)...)
	}
	_, _ = c.bw.Write(b)
	return transmit
}

func (c *conn) optList(data []byte) {
	if len(data) != 0 {
		c.optError(optList, repErrInvalid, "LIST takes no data, got %d bytes", len(data))
		return
	}
	for _, e := range c.srv.exports.List(&c.client) {
		d := binary.BigEndian.AppendUint32(nil, uint32(len(e.Name)))
		d = append(d, e.Name...)
		d = append(d, e.Description...)
		c.optReply(optList, repServer, d)
	}
	c.optReply(optList, repAck, nil)
}

func (c *conn) optInfoGo(n *negotiation, opt uint32, data []byte) outcome {
	req, err := parseInfoRequest(data)
	if err != nil {
		c.optError(opt, repErrInvalid, "%s: %v", optName(opt), err)
		return stay
	}
	exp, err := c.open(req.name)
	if err != nil {
		typ := uint32(repErrUnknown)
		if refused := (*RefusedError)(nil); errors.As(err, &refused) {
			typ = repErrPolicy
		}
		c.optError(opt, typ, "export %q: %v", req.name, err)
		return stay
	}
	var wantBlockSize bool
	s := c.sessionFor(exp, n, req.name)
	c.optInfo(opt, binary.BigEndian.AppendUint64([]byte{0, infoExport}, s.size), s.tflags)
	for i, t := range req.infos {
		if dup(req.infos[:i], t) {
			continue
		}
		switch t {
		case infoName:
			name := exp.Name
			if name == "" {
				name = req.name
			}
			c.optReply(opt, repInfo, append([]byte{0, infoName}, name...))
		case infoDescription:
			if exp.Description != "" {
				c.optReply(opt, repInfo, append([]byte{0, infoDescription}, exp.Description...))
			}
		case infoBlockSize:
			wantBlockSize = true
		}
	}
	// Block sizes go out whether asked or not, so every client can see
	// them; only a client that asked is held to them (strictAlign).
	bs := binary.BigEndian.AppendUint32([]byte{0, infoBlockSize}, s.minBlock)
	bs = binary.BigEndian.AppendUint32(bs, preferredBlockSize)
	bs = binary.BigEndian.AppendUint32(bs, maxPayload)
	c.optReply(opt, repInfo, bs)
	c.optReply(opt, repAck, nil)
	if opt == optInfo {
		if exp.Release != nil {
			exp.Release()
		}
		return stay
	}
	s.strictAlign = wantBlockSize
	c.enter(exp, s)
	return transmit
}

// optInfo sends NBD_INFO_EXPORT: the 10 bytes so far plus the flags.
func (c *conn) optInfo(opt uint32, b []byte, tflags uint16) {
	c.optReply(opt, repInfo, binary.BigEndian.AppendUint16(b, tflags))
}

func dup(seen []uint16, t uint16) bool {
	for _, s := range seen {
		if s == t {
			return true
		}
	}
	return false
}

// optStartTLS answers NBD_OPT_STARTTLS: on a listener with a TLS
// configuration, the reply goes out in clear and the TLS handshake
// follows at once; negotiation then starts over inside it.
func (c *conn) optStartTLS(n *negotiation, data []byte) outcome {
	switch {
	case c.tlsConf == nil:
		c.optError(optStartTLS, repErrUnsup, "TLS is not offered on this socket; connect without TLS")
		return stay
	case c.client.TLS != nil:
		c.optError(optStartTLS, repErrInvalid, "TLS is already negotiated")
		return stay
	case len(data) != 0:
		c.optError(optStartTLS, repErrInvalid, "STARTTLS takes no data, got %d bytes", len(data))
		return stay
	}
	c.optReply(optStartTLS, repAck, nil)
	if !c.flush() {
		return hangUp
	}
	if c.br.Buffered() != 0 {
		// Bytes sent before the reply would be read as TLS records.
		c.log.Info("nbd: client sent data before the STARTTLS reply; closing")
		return hangUp
	}
	cork := &corkedConn{Conn: c.raw, bw: bufio.NewWriterSize(c.raw, corkSize)}
	tc := tls.Server(cork, c.tlsConf)
	if err := tc.Handshake(); err != nil {
		c.log.Info("nbd: TLS handshake failed; closing", "err", err)
		return hangUp
	}
	st := tc.ConnectionState()
	c.wmu.Lock()
	cork.mu.Lock()
	cork.corked = true
	cork.mu.Unlock()
	c.nc, c.client.TLS, c.cork = tc, &st, cork
	c.br = bufio.NewReaderSize(tc, handshakeBufSize)
	c.bw = bufio.NewWriterSize(tc, handshakeBufSize)
	c.wmu.Unlock()
	*n = negotiation{} // nothing from before TLS carries over
	if len(st.PeerCertificates) > 0 {
		c.log = c.log.With("tls_subject", st.PeerCertificates[0].Subject.String())
	}
	c.log.Debug("nbd: TLS negotiated", "version", tls.VersionName(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite))
	return stay
}

// optMeta answers NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT:
// base:allocation, and the contexts the Exports offers for the export
// (MetaContexter, meta.go). Queries naming nothing offered are ignored,
// as the spec requires.
func (c *conn) optMeta(n *negotiation, opt uint32, data []byte) {
	set := opt == optSetMetaContext
	if set {
		// SET replaces the selection even when it fails.
		n.metaName, n.metaAlloc, n.meta = "", false, nil
	}
	if !n.structured {
		c.optError(opt, repErrInvalid, "%s: negotiate STRUCTURED_REPLY first", optName(opt))
		return
	}
	req, err := parseMetaRequest(data)
	if err != nil {
		c.optError(opt, repErrInvalid, "%s: %v", optName(opt), err)
		return
	}
	offered := c.offered(req.name)
	var sel []metaSel
	alloc := false
	for _, name := range selectMeta(offered, req.queries, !set) {
		id := uint32(0) // LIST: "SHOULD be set to zero"
		if set {
			id = uint32(slices.Index(offered, name)) + baseAllocationID
			if name == baseAllocationName {
				alloc = true
			} else {
				sel = append(sel, metaSel{id: id, name: name})
			}
		}
		c.optReply(opt, repMetaContext, appendMetaReply(nil, id, name))
	}
	if set {
		n.metaName, n.metaAlloc, n.meta = req.name, alloc, sel
	}
	c.optReply(opt, repAck, nil)
}

// open opens an export and checks the Exports implementation kept its
// side of the contract.
func (c *conn) open(name string) (*Export, error) {
	exp, err := c.srv.exports.Open(&c.client, name)
	if err != nil {
		return nil, err
	}
	if exp == nil || exp.Backend == nil {
		c.log.Error("nbd: Exports.Open returned no backend", "export", name)
		if exp != nil && exp.Release != nil {
			exp.Release()
		}
		return nil, fmt.Errorf("export %q has no backend", name)
	}
	return exp, nil
}

// sessionFor computes what the client will be told about exp.
func (c *conn) sessionFor(exp *Export, n *negotiation, name string) session {
	size := exp.Backend.Size()
	s := session{
		size:       uint64(max(size, 0)),
		tflags:     tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendCache | tflagCanMultiConn,
		structured: n.structured,
		metaAlloc:  n.structured && n.metaAlloc && n.metaName == name,
		minBlock:   minBlockSize,
	}
	if n.structured && n.metaName == name {
		s.meta = n.meta
	}
	if size%minBlockSize != 0 {
		s.minBlock = 1 // else the tail could not be addressed
	}
	if n.structured {
		s.tflags |= tflagSendDF // every read is one chunk, so DF always holds
	}
	if exp.ReadOnly {
		s.tflags |= tflagReadOnly
	} else {
		s.tflags |= tflagSendTrim | tflagSendWriteZeroes
		if fz, ok := exp.Backend.(FastZeroer); ok && fz.FastZero() {
			s.tflags |= tflagSendFastZero
		}
	}
	return s
}

// enter fixes the export and session for transmission.
func (c *conn) enter(exp *Export, s session) {
	c.exp, c.be, c.sess = exp, exp.Backend, s
	c.export.Store(&exp.Name)
	c.ext, _ = exp.Backend.(Extenter)
	c.prep = preparerOf(exp)
	c.log = c.log.With("export", exp.Name)
	c.openMeta(exp)
	c.log.Debug("nbd: transmission", "size", s.size, "flags", fmt.Sprintf("0x%04x", s.tflags),
		"structured", s.structured, "base_allocation", s.metaAlloc, "contexts", len(s.meta))
}

func (c *conn) optReply(opt, typ uint32, data []byte) {
	_, _ = c.bw.Write(appendOptReply(c.hdr[:0], opt, typ, data))
}

// optError sends an error reply whose data is a message for the user.
func (c *conn) optError(opt, typ uint32, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if len(msg) > maxStringLen {
		msg = msg[:maxStringLen]
	}
	c.log.Debug("nbd: option refused", "option", optName(opt), "reply", fmt.Sprintf("0x%08x", typ), "msg", msg)
	c.optReply(opt, typ, []byte(msg))
}
