package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire constants from NetworkBlockDevice/nbd doc/proto.md. All integers on
// the wire are big-endian.

// Magic numbers.
const (
	magicNBD        = 0x4e42444d41474943 // "NBDMAGIC", first word of the greeting
	magicOpt        = 0x49484156454F5054 // "IHAVEOPT", greeting and every option request
	magicRep        = 0x3e889045565a9    // option reply
	magicRequest    = 0x25609513         // transmission request
	magicSimple     = 0x67446698         // simple reply
	magicStructured = 0x668e33ef         // structured reply chunk
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle   = 1 << 0
	flagNoZeroes        = 1 << 1
	clientFixedNewstyle = 1 << 0
	clientNoZeroes      = 1 << 1
	clientKnownFlags    = clientFixedNewstyle | clientNoZeroes
)

// Options.
const (
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optPeekExport      = 4
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10
	optExtendedHeaders = 11
)

// Option reply types; errors have bit 31 set.
const (
	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4

	repErrUnsup     = 1<<31 + 1
	repErrPolicy    = 1<<31 + 2
	repErrInvalid   = 1<<31 + 3
	repErrPlatform  = 1<<31 + 4
	repErrTLSReqd   = 1<<31 + 5
	repErrUnknown   = 1<<31 + 6
	repErrShutdown  = 1<<31 + 7
	repErrBlockSize = 1<<31 + 8
	repErrTooBig    = 1<<31 + 9
)

// Information types for NBD_OPT_INFO and NBD_OPT_GO.
const (
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Transmission flags.
const (
	tflagHasFlags        = 1 << 0
	tflagReadOnly        = 1 << 1
	tflagSendFlush       = 1 << 2
	tflagSendFUA         = 1 << 3
	tflagRotational      = 1 << 4
	tflagSendTrim        = 1 << 5
	tflagSendWriteZeroes = 1 << 6
	tflagSendDF          = 1 << 7
	tflagCanMultiConn    = 1 << 8
	tflagSendResize      = 1 << 9
	tflagSendCache       = 1 << 10
	tflagSendFastZero    = 1 << 11
)

// Commands.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7
)

// Command flags.
const (
	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagReqOne   = 1 << 3
	cmdFlagFastZero = 1 << 4
	cmdKnownFlags   = cmdFlagFUA | cmdFlagNoHole | cmdFlagDF | cmdFlagReqOne | cmdFlagFastZero
)

// Structured reply flags and chunk types.
const (
	replyFlagDone = 1 << 0

	chunkNone        = 0
	chunkOffsetData  = 1
	chunkOffsetHole  = 2
	chunkBlockStatus = 5
	chunkError       = 1<<15 + 1
	chunkErrorOffset = 1<<15 + 2
)

// base:allocation status flags.
const (
	stateHole = 1 << 0
	stateZero = 1 << 1
)

// NBD error numbers: the only values a reply may carry.
const (
	errPerm     = 1
	errIO       = 5
	errNoMem    = 12
	errInval    = 22
	errNoSpc    = 28
	errOverflow = 75
	errNotSup   = 95
	errShutdown = 108
)

// Sizes of fixed wire structures.
const (
	requestSize        = 28 // magic, flags, type, cookie, offset, length
	optHeaderSize      = 16 // IHAVEOPT, option, length
	simpleReplySize    = 16 // magic, error, cookie
	chunkHeaderSize    = 20 // magic, flags, type, cookie, length
	repHeaderSize      = 20 // magic, option, type, length
	maxStringLen       = 4096
	baseAllocationName = "base:allocation"
	baseAllocationID   = 1 // context id we hand out for base:allocation
)

// request is one transmission-phase request header.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	offset uint64
	length uint32
}

// errBadMagic means the stream is not at a request boundary; it cannot be
// resynchronised, so the connection must be dropped.
var errBadMagic = errors.New("bad request magic")

// decodeRequest parses a 28-byte request header.
func decodeRequest(b []byte) (request, error) {
	if len(b) < requestSize {
		return request{}, fmt.Errorf("request header is %d bytes, need %d", len(b), requestSize)
	}
	if m := binary.BigEndian.Uint32(b); m != magicRequest {
		return request{}, fmt.Errorf("%w 0x%08x (want 0x%08x)", errBadMagic, m, magicRequest)
	}
	return request{
		flags:  binary.BigEndian.Uint16(b[4:]),
		typ:    binary.BigEndian.Uint16(b[6:]),
		cookie: binary.BigEndian.Uint64(b[8:]),
		offset: binary.BigEndian.Uint64(b[16:]),
		length: binary.BigEndian.Uint32(b[24:]),
	}, nil
}

// appendRequest appends r's wire form (the client's side; tests and fuzzing).
func appendRequest(b []byte, r request) []byte {
	b = binary.BigEndian.AppendUint32(b, magicRequest)
	b = binary.BigEndian.AppendUint16(b, r.flags)
	b = binary.BigEndian.AppendUint16(b, r.typ)
	b = binary.BigEndian.AppendUint64(b, r.cookie)
	b = binary.BigEndian.AppendUint64(b, r.offset)
	return binary.BigEndian.AppendUint32(b, r.length)
}

// optHeader is an option request header.
type optHeader struct {
	option uint32
	length uint32
}

var errBadOptMagic = errors.New("bad option magic")

func decodeOptHeader(b []byte) (optHeader, error) {
	if len(b) < optHeaderSize {
		return optHeader{}, fmt.Errorf("option header is %d bytes, need %d", len(b), optHeaderSize)
	}
	if m := binary.BigEndian.Uint64(b); m != magicOpt {
		return optHeader{}, fmt.Errorf("%w 0x%016x (want IHAVEOPT)", errBadOptMagic, m)
	}
	return optHeader{option: binary.BigEndian.Uint32(b[8:]), length: binary.BigEndian.Uint32(b[12:])}, nil
}

func appendOptHeader(b []byte, h optHeader) []byte {
	b = binary.BigEndian.AppendUint64(b, magicOpt)
	b = binary.BigEndian.AppendUint32(b, h.option)
	return binary.BigEndian.AppendUint32(b, h.length)
}

// errOptSyntax marks option data that does not parse: NBD_REP_ERR_INVALID.
var errOptSyntax = errors.New("malformed option data")

// infoRequest is the data of NBD_OPT_INFO and NBD_OPT_GO.
type infoRequest struct {
	name  string
	infos []uint16
}

func parseInfoRequest(d []byte) (infoRequest, error) {
	if len(d) < 6 {
		return infoRequest{}, fmt.Errorf("%w: %d bytes, need at least 6", errOptSyntax, len(d))
	}
	nlen := binary.BigEndian.Uint32(d)
	if uint64(nlen) > uint64(len(d)-6) {
		return infoRequest{}, fmt.Errorf("%w: name length %d exceeds option length %d - 6", errOptSyntax, nlen, len(d))
	}
	name, err := checkString(d[4:4+nlen], "export name")
	if err != nil {
		return infoRequest{}, err
	}
	rest := d[4+nlen:]
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*n {
		return infoRequest{}, fmt.Errorf("%w: %d information requests need %d bytes, have %d", errOptSyntax, n, 2*n, len(rest))
	}
	r := infoRequest{name: name, infos: make([]uint16, n)}
	for i := range r.infos {
		r.infos[i] = binary.BigEndian.Uint16(rest[2*i:])
	}
	return r, nil
}

func appendInfoRequest(b []byte, r infoRequest) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.name)))
	b = append(b, r.name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.infos)))
	for _, i := range r.infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

// metaRequest is the data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT.
type metaRequest struct {
	name    string
	queries []string
}

func parseMetaRequest(d []byte) (metaRequest, error) {
	name, rest, err := takeString(d, "export name")
	if err != nil {
		return metaRequest{}, err
	}
	if len(rest) < 4 {
		return metaRequest{}, fmt.Errorf("%w: no query count after the export name", errOptSyntax)
	}
	n := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	// Each query takes at least 4 bytes: bound n by the data, not by trust.
	if uint64(n) > uint64(len(rest)/4) {
		return metaRequest{}, fmt.Errorf("%w: %d queries cannot fit in %d bytes", errOptSyntax, n, len(rest))
	}
	r := metaRequest{name: name, queries: make([]string, 0, n)}
	for i := uint32(0); i < n; i++ {
		var q string
		if q, rest, err = takeString(rest, "query"); err != nil {
			return metaRequest{}, err
		}
		r.queries = append(r.queries, q)
	}
	if len(rest) != 0 {
		return metaRequest{}, fmt.Errorf("%w: %d bytes after the last query", errOptSyntax, len(rest))
	}
	return r, nil
}

func appendMetaRequest(b []byte, r metaRequest) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.name)))
	b = append(b, r.name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.queries)))
	for _, q := range r.queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// takeString reads a u32 length and that many bytes of string.
func takeString(d []byte, what string) (string, []byte, error) {
	if len(d) < 4 {
		return "", nil, fmt.Errorf("%w: %s length missing", errOptSyntax, what)
	}
	n := binary.BigEndian.Uint32(d)
	d = d[4:]
	if uint64(n) > uint64(len(d)) {
		return "", nil, fmt.Errorf("%w: %s length %d exceeds the %d bytes left", errOptSyntax, what, n, len(d))
	}
	s, err := checkString(d[:n], what)
	return s, d[n:], err
}

// checkString applies the spec's string rules that matter to a server: at
// most 4096 bytes and no NUL.
func checkString(b []byte, what string) (string, error) {
	if len(b) > maxStringLen {
		return "", fmt.Errorf("%w: %s is %d bytes, the limit is %d", errOptSyntax, what, len(b), maxStringLen)
	}
	for _, c := range b {
		if c == 0 {
			return "", fmt.Errorf("%w: %s contains a NUL byte", errOptSyntax, what)
		}
	}
	return string(b), nil
}

// appendOptReply appends an option reply header and its data.
func appendOptReply(b []byte, option, typ uint32, data []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, magicRep)
	b = binary.BigEndian.AppendUint32(b, option)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func appendSimpleReply(b []byte, errno uint32, cookie uint64) []byte {
	b = binary.BigEndian.AppendUint32(b, magicSimple)
	b = binary.BigEndian.AppendUint32(b, errno)
	return binary.BigEndian.AppendUint64(b, cookie)
}

func appendChunkHeader(b []byte, flags, typ uint16, cookie uint64, length uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, magicStructured)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	return binary.BigEndian.AppendUint32(b, length)
}

// appendErrorChunk appends a final NBD_REPLY_TYPE_ERROR chunk with msg.
func appendErrorChunk(b []byte, cookie uint64, errno uint32, msg string) []byte {
	if len(msg) > maxStringLen {
		msg = msg[:maxStringLen]
	}
	b = appendChunkHeader(b, replyFlagDone, chunkError, cookie, uint32(6+len(msg)))
	b = binary.BigEndian.AppendUint32(b, errno)
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

var cmdNames = [...]string{"READ", "WRITE", "DISC", "FLUSH", "TRIM", "CACHE", "WRITE_ZEROES", "BLOCK_STATUS"}

func cmdName(t uint16) string {
	if int(t) < len(cmdNames) {
		return cmdNames[t]
	}
	return fmt.Sprintf("command %d", t)
}

var optNames = map[uint32]string{
	optExportName: "EXPORT_NAME", optAbort: "ABORT", optList: "LIST", optPeekExport: "PEEK_EXPORT",
	optStartTLS: "STARTTLS", optInfo: "INFO", optGo: "GO", optStructuredReply: "STRUCTURED_REPLY",
	optListMetaContext: "LIST_META_CONTEXT", optSetMetaContext: "SET_META_CONTEXT",
	optExtendedHeaders: "EXTENDED_HEADERS",
}

func optName(o uint32) string {
	if s, ok := optNames[o]; ok {
		return s
	}
	return fmt.Sprintf("option %d", o)
}
