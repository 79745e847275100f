package nbd

import "fmt"

// Size constraints advertised in NBD_INFO_BLOCK_SIZE.
const (
	minBlockSize       = 512
	preferredBlockSize = 4096
	maxPayload         = 32 << 20
	// maxSkip is the largest invalid write payload the server reads and
	// throws away to stay in step with the client; past it the request
	// is treated as a denial of service and the connection is dropped,
	// as the spec allows for payloads beyond 32 MiB.
	maxSkip = 64 << 20
)

// session is what the handshake negotiated for one connection; it is
// fixed once transmission starts.
type session struct {
	size       uint64    // export size announced to the client
	tflags     uint16    // transmission flags announced to the client
	structured bool      // NBD_OPT_STRUCTURED_REPLY acknowledged
	metaAlloc  bool      // base:allocation selected for the export in use
	meta       []metaSel // other contexts selected for it (meta.go)
	minBlock   uint32    // advertised minimum block size
	// strictAlign: the client asked for NBD_INFO_BLOCK_SIZE in
	// NBD_OPT_GO, so it promised to honour minBlock; other clients may
	// send any alignment and get served.
	strictAlign bool
}

// verdict is validate's answer: errno 0 means serve the request.
type verdict struct {
	errno uint32
	msg   string // why, for the log and the structured error chunk
	// hangup: the request carries a write payload too large to skip,
	// so the stream cannot be kept in step; drop the connection.
	hangup bool
}

// validate checks a request against the session before anything else
// looks at it, like nbdkit's validate_request: the rest of the server
// may assume a request that passes is well formed and in range.
func (s *session) validate(r *request) verdict {
	v := s.check(r)
	if v.errno != 0 && r.typ == cmdWrite && r.length > maxSkip {
		v.hangup = true
		v.msg += fmt.Sprintf("; the %d-byte payload is too large to skip", r.length)
	}
	return v
}

func (s *session) check(r *request) verdict {
	name := cmdName(r.typ)
	if r.typ > cmdBlockStatus {
		return reject(errInval, "unknown command %d", r.typ)
	}
	if r.flags&^cmdKnownFlags != 0 {
		return reject(errInval, "%s: unknown flags 0x%04x", name, r.flags&^cmdKnownFlags)
	}
	if v := s.checkFlags(r, name); v.errno != 0 {
		return v
	}
	if s.tflags&tflagReadOnly != 0 && (r.typ == cmdWrite || r.typ == cmdTrim || r.typ == cmdWriteZeroes) {
		return reject(errPerm, "%s: the export is read-only", name)
	}
	switch r.typ {
	case cmdFlush:
		if r.offset != 0 || r.length != 0 {
			return reject(errInval, "FLUSH: offset %d and length %d must be zero", r.offset, r.length)
		}
		return verdict{}
	case cmdTrim:
		if s.tflags&tflagSendTrim == 0 {
			return reject(errInval, "TRIM was not advertised")
		}
	case cmdWriteZeroes:
		if s.tflags&tflagSendWriteZeroes == 0 {
			return reject(errInval, "WRITE_ZEROES was not advertised")
		}
	case cmdBlockStatus:
		if !s.structured || !s.metaAlloc && len(s.meta) == 0 {
			return reject(errInval, "BLOCK_STATUS needs structured replies and a metadata context (base:allocation, qemu:dirty-bitmap:...) negotiated for this export")
		}
		if r.length == 0 {
			return reject(errInval, "BLOCK_STATUS of length 0")
		}
	case cmdRead, cmdWrite:
		if r.length > maxPayload {
			return reject(errInval, "%s of %d bytes exceeds the maximum payload of %d bytes; split the request", name, r.length, maxPayload)
		}
	}
	return s.checkRange(r, name)
}

// checkFlags rejects command flags that are not valid for the command or
// were not advertised.
func (s *session) checkFlags(r *request, name string) verdict {
	f := r.flags
	switch {
	case f&cmdFlagFUA != 0 && s.tflags&tflagSendFUA == 0:
		return reject(errInval, "%s: FUA was not advertised", name)
	case f&cmdFlagNoHole != 0 && r.typ != cmdWriteZeroes:
		return reject(errInval, "%s: NO_HOLE is only valid on WRITE_ZEROES", name)
	case f&cmdFlagFastZero != 0 && (r.typ != cmdWriteZeroes || s.tflags&tflagSendFastZero == 0):
		return reject(errInval, "%s: FAST_ZERO is only valid on WRITE_ZEROES when advertised", name)
	case f&cmdFlagDF != 0 && (r.typ != cmdRead || !s.structured):
		return reject(errInval, "%s: DF is only valid on READ with structured replies", name)
	case f&cmdFlagReqOne != 0 && r.typ != cmdBlockStatus:
		return reject(errInval, "%s: REQ_ONE is only valid on BLOCK_STATUS", name)
	}
	return verdict{}
}

// checkRange applies alignment (for clients that agreed to it) and the
// export's bounds. Past the end is ENOSPC for writes and EINVAL otherwise,
// as the spec's error section says.
func (s *session) checkRange(r *request, name string) verdict {
	if s.strictAlign && (r.offset%uint64(s.minBlock) != 0 || r.length%s.minBlock != 0) {
		return reject(errInval, "%s: offset %d or length %d is not a multiple of the agreed block size %d",
			name, r.offset, r.length, s.minBlock)
	}
	if r.offset > s.size || uint64(r.length) > s.size-r.offset {
		errno := uint32(errInval)
		if r.typ == cmdWrite || r.typ == cmdWriteZeroes {
			errno = errNoSpc
		}
		return reject(errno, "%s of %d bytes at offset %d is past the end of the export (%d bytes)",
			name, r.length, r.offset, s.size)
	}
	return verdict{}
}

func reject(errno uint32, format string, args ...any) verdict {
	return verdict{errno: errno, msg: fmt.Sprintf(format, args...)}
}
