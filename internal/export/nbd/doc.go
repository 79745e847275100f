// Package nbd serves block devices over the Network Block Device protocol
// (NetworkBlockDevice/nbd doc/proto.md), written against the spec with
// nbdkit's server/protocol.c as the model for validation.
//
// # Protocol
//
// Fixed newstyle handshake with NO_ZEROES. Options: GO and INFO (with
// NBD_INFO_EXPORT, NAME, DESCRIPTION and BLOCK_SIZE: minimum 512,
// preferred 4096, maximum payload 32 MiB), EXPORT_NAME, LIST, ABORT,
// STRUCTURED_REPLY, LIST_META_CONTEXT and SET_META_CONTEXT for
// base:allocation. Every other option gets NBD_REP_ERR_UNSUP. Commands:
// READ, WRITE, DISC, FLUSH, TRIM, CACHE (a no-op), WRITE_ZEROES (with
// NO_HOLE and, for a FastZeroer backend, FAST_ZERO) and BLOCK_STATUS.
// FUA is a Flush after the write.
//
// # Clients and TLS
//
// Exports decide what each client may list and open from a Client: the
// peer's SO_PEERCRED on a unix socket, the TLS session (with the verified
// certificate chain) after STARTTLS. An Open error that is a
// *RefusedError goes out as NBD_REP_ERR_POLICY with its text. ServeTLS
// makes a listener's clients negotiate TLS (NBD_OPT_STARTTLS, then a
// crypto/tls handshake) before anything else, as the spec's forced-TLS
// server does: other options get NBD_REP_ERR_TLS_REQD, EXPORT_NAME a
// hang-up. Negotiation starts over inside TLS. On Serve's listeners
// STARTTLS gets NBD_REP_ERR_UNSUP. TLS-PSK is not offered: crypto/tls
// has no PSK.
//
// # Validation and errors
//
// Every request passes session.validate before anything else looks at
// it; backend errors become NBD error numbers only in nbdErrno, by the
// class dm.Errno gives them. A bad request magic closes the connection
// (the stream cannot be resynchronised); a write payload that is invalid
// is read and discarded, unless it is over 64 MiB, which closes the
// connection. Nothing a client sends can make the server panic.
//
// # Concurrency
//
// Per connection, one reader goroutine runs the handshake and then reads
// requests in order. It serves reads and writes of up to 1 MiB itself,
// which costs no goroutine wake-up, and starts a goroutine for anything
// that may block (flush, FUA, trim, zeroes, extents, larger transfers),
// or for all I/O once the backend is measured to be slow. Replies go out of
// order through one buffered writer: the reader flushes when no complete
// request is waiting, workers flush after their reply. The bytes in
// flight per connection are bounded (Options.MaxInFlight); at the bound,
// the reader stops reading until workers finish. Before it serves the
// first write of a burst it holds whole in its buffer, the reader hands a
// backend that is a dm.WritesPreparer the ranges of all of them, so that
// their copy-before-write is committed in one step (prepare.go). Lock
// order: conn.mu and conn.wmu are never held together.
//
// A READ of 64 KiB or more on a plain socket, from a backend that lends
// its memory (dm.Lender, *dm.Device over memory), is sent from that memory
// without a copy. A loan holds the device's I/O like a read under way,
// so it never waits on the client: the reply's writev does not block,
// and what the socket does not take at once is copied and the loan given
// back before the rest is sent; a reply that must wait for another's
// write (wmu) or for buffered replies to go first is copied too.
//
// The server announces NBD_FLAG_CAN_MULTI_CONN: an Exports implementation
// must hand every connection to one name a Backend sharing the same data
// and cache, as *dm.Device does.
package nbd
