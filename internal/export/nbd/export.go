package nbd

import "crypto/tls"

// Backend is what an export serves; *dm.Device satisfies it. ReadAt and
// WriteAt follow io.ReaderAt and io.WriterAt: they are called concurrently
// (writes possibly on overlapping ranges, in which case either may land
// last), and never retain p. The server checks every range against the
// size it announced before calling, so a backend sees out-of-range I/O
// only if it shrank since the client connected.
type Backend interface {
	Size() int64
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	// Flush makes every completed write durable.
	Flush() error
	// Discard deallocates a range; it may read back as anything.
	// A backend returning dm.ErrNotSupported makes NBD_CMD_TRIM a no-op.
	Discard(off, n int64) error
	// WriteZeroes makes the range read back as zeroes, allocated or not.
	// A backend returning dm.ErrNotSupported gets zero-filled writes instead.
	WriteZeroes(off, n int64) error
}

// Extenter is implemented by backends that know where their holes are
// (SEEK_HOLE/SEEK_DATA on the backing). Without it, NBD_CMD_BLOCK_STATUS
// for base:allocation reports every range as allocated data.
type Extenter interface {
	// Extents describes consecutive extents starting at off, covering
	// at least a prefix of [off, off+n). Extents past off+n are ignored.
	Extents(off, n int64) ([]Extent, error)
}

// Extent is one run of the base:allocation map.
type Extent struct {
	Length int64
	Hole   bool // not allocated in the backing store
	Zero   bool // reads as zeroes
}

// FastZeroer is implemented by backends whose WriteZeroes is faster than
// writing the same zeroes (it punches holes or drops metadata). Without
// it, or when FastZero reports false, the server does not advertise
// NBD_FLAG_SEND_FAST_ZERO, so clients never ask for a fast zero.
type FastZeroer interface {
	FastZero() bool
}

// Export is one opened export, valid for one connection.
type Export struct {
	Name        string // canonical name, sent as NBD_INFO_NAME
	Description string // free text for NBD_INFO_DESCRIPTION
	Backend     Backend
	ReadOnly    bool
	// Release, if not nil, is called once, after the connection's last
	// use of Backend (disconnect, or the end of an NBD_OPT_INFO).
	Release func()
	// Meta, if not nil, opens a metadata context the client selected
	// (one MetaContexter offered for this export), once per connection
	// when transmission starts; its map answers that connection's
	// NBD_CMD_BLOCK_STATUS. An error fails those requests with EIO.
	Meta func(context string) (MetaMap, error)
}

// ExportInfo describes an export in NBD_OPT_LIST.
type ExportInfo struct {
	Name        string
	Description string
}

// Client is what the transport tells of the other end of a connection:
// an Exports implementation decides from it what the client may see.
type Client struct {
	// Network is "unix" or "tcp".
	Network string
	// Addr is the peer's address ("tcp:127.0.0.1:50312"), or the socket's
	// when the peer has none (an unnamed unix socket).
	Addr string
	// Cred is the peer process's credentials (SO_PEERCRED, taken when it
	// connected) on a unix socket; nil on TCP or if they could not be read.
	Cred *Cred
	// TLS is the session NBD_OPT_STARTTLS set up, with the client's
	// verified certificate chain; nil without TLS.
	TLS *tls.ConnectionState
}

// Cred is a unix socket peer's SO_PEERCRED.
type Cred struct {
	PID      int
	UID, GID uint32
}

// RefusedError is an Exports.Open error that denies the client an export
// that exists: the server sends NBD_REP_ERR_POLICY with Err's text
// instead of NBD_REP_ERR_UNKNOWN.
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

// Exports is the set of exports a server offers.
type Exports interface {
	// Open is called once per connection at NBD_OPT_GO or
	// NBD_OPT_EXPORT_NAME, and for each NBD_OPT_INFO (released at once).
	// "" names the default export, if there is one. The error text is
	// sent to the client, so it should say what is wrong, not how the
	// daemon is built; a *RefusedError says the client may not have it.
	// Every Export opened for one name must share its data and its
	// write cache: the server advertises NBD_FLAG_CAN_MULTI_CONN.
	Open(c *Client, name string) (*Export, error)
	// List returns the exports to show c for NBD_OPT_LIST.
	List(c *Client) []ExportInfo
}
