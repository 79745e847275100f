package wire

// The session protocol runs on <state>/dax.sock, a unix SOCK_SEQPACKET
// socket separate from the HTTP API: one SessionMsg per packet, as JSON,
// with file descriptors attached to the packet (SCM_RIGHTS). The client
// sends a request and waits for its answer; the daemon answers in order.
//
// Mapping a device (the client library does all of it in Map):
//
//	client → daemon  OpMap     Map: device, range, write, require_sync
//	daemon → client  OpGrant   Grant: the pieces to map, one descriptor each
//	                           (O_RDONLY for a read-only map), or OpError
//	client                     reserves one address range, maps every piece
//	                           MAP_FIXED|MAP_SHARED into it, MADV_DONTFORK,
//	                           closes the descriptors; for a write map over
//	                           write-protectable memory it creates a
//	                           userfaultfd and registers the range (WP mode)
//	client → daemon  OpArmed   Armed: where the range is; the userfaultfd
//	                           attached (the client closes its own copy)
//	daemon → client  OpReady   the daemon protected what snapshots still
//	                           need and handles the faults from now on
//	                           (or OpError: the client unmaps)
//
// Unmapping: the client unmaps the range, then sends OpUnmap with the
// mapping's ID; the daemon answers OpUnmapped. Closing the connection
// releases every mapping of the session.
//
// Recall (the daemon's stop-the-world, before a change that moves or
// removes mapped memory): the daemon sends OpRecall with the mapping's ID
// and a deadline, unasked; the client library pauses the mapping's
// accessors, unmaps the range and sends OpRecalled (no answer), or sends
// OpRecallRefused when the program holds the memory in a way the library
// cannot pause. The daemon then checks /proc/PID/maps. A recalled mapping
// is mapped again, lazily, by the library. While a device's mappings are
// recalled, map requests for it are refused with CodeRetry.

// Adoption (after a daemon restart): the client library keeps its own
// copy of every mapping's userfaultfd, so the range stays write-protected
// while no daemon runs: a store to a protected page waits in the kernel.
// When the session's connection ends, the library dials again until a
// daemon answers and, for each mapping, sends:
//
//	client → daemon  OpAdopt   Adopt: device, range, address, and the pieces
//	                           and files it mapped (their identity); the
//	                           userfaultfd attached
//	daemon → client  OpReady   the daemon checked the device still maps the
//	                           same memory there, protected what snapshots
//	                           need, woke the stores the old daemon left
//	                           waiting, and handles the faults from now on
//	                           (or OpError: the library gives the mapping up
//	                           as a recall does; CodeRetry: ask again)

// Session message operations (SessionMsg.Op).
const (
	OpMap      = "map"
	OpGrant    = "grant"
	OpArmed    = "armed"
	OpReady    = "ready"
	OpUnmap    = "unmap"
	OpUnmapped = "unmapped"
	OpError    = "error"
	OpAdopt    = "adopt" // client → daemon, Adopt set: a mapping made with an earlier daemon

	OpRecall        = "recall"         // daemon → client, Recall set
	OpRecalled      = "recalled"       // client → daemon, after munmap
	OpRecallRefused = "recall_refused" // client → daemon, Error says why

	// Persist on a checkpointed volume (wire/checkpoint.go): the client
	// sends OpPersist with the mapping's ID; the daemon answers
	// OpPersisted once a checkpoint that holds every store made before
	// the request is durable (or OpError). OpDurability, unasked, tells
	// the client that checkpoints of the mapping's device were turned on
	// or off (Durability set).
	OpPersist    = "persist"
	OpPersisted  = "persisted" // Durability set
	OpDurability = "durability"
)

// SessionMsg is one packet of the session protocol. ID names the mapping
// the message is about: the client picks it in OpMap, every later message
// about that mapping carries it.
type SessionMsg struct {
	Op     string     `json:"op"`
	ID     uint64     `json:"id"`
	Map    *MapReq    `json:"map,omitempty"`
	Grant  *MapGrant  `json:"grant,omitempty"`
	Armed  *MapArmed  `json:"armed,omitempty"`
	Recall *Recall    `json:"recall,omitempty"`
	Adopt  *MapAdopt  `json:"adopt,omitempty"`
	Error  *ErrorBody `json:"error,omitempty"` // with OpError and OpRecallRefused
	// Durability: with OpPersisted and OpDurability.
	Durability *MapDurability `json:"durability,omitempty"`
}

// MapDurability is what Persist achieves on a mapping: Text for people
// (Mapping.Durability); Checkpointed: Persist asks the daemon for a
// checkpoint (OpPersist) and returns once it is durable.
type MapDurability struct {
	Text         string `json:"text"`
	Checkpointed bool   `json:"checkpointed,omitempty"`
}

// Recall asks the client to give a mapping back within DeadlineMS
// milliseconds, because Reason.
type Recall struct {
	DeadlineMS int64  `json:"deadline_ms"`
	Reason     string `json:"reason"`
}

// MapReq asks for a mapping of [Offset, Offset+Length) of a device.
type MapReq struct {
	Device string `json:"device"`
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
	Write  bool   `json:"write,omitempty"`
	// RequireSync: fail unless the device is sync (MAP_SYNC: a cache
	// flush makes a store durable), instead of mapping volatile memory.
	RequireSync bool `json:"require_sync,omitempty"`
}

// MapGrant says how to build the mapping: Pieces in order cover the range
// exactly; the packet carries one descriptor per piece, in order.
type MapGrant struct {
	Pieces   []MapPiece `json:"pieces"`
	PageSize int64      `json:"page_size"` // alignment of the address range
	// Sync: map with MAP_SHARED_VALIDATE|MAP_SYNC.
	Sync bool `json:"sync,omitempty"`
	// WriteProtect: the daemon catches writes with userfaultfd
	// write-protect; a write map must send a registered userfaultfd.
	WriteProtect bool `json:"write_protect,omitempty"`
	// Durability describes what Persist achieves ("volatile memory: ...").
	Durability string `json:"durability,omitempty"`
	// Checkpointed: the device is checkpointed, so Persist is a
	// checkpoint (OpPersist), not only msync.
	Checkpointed bool `json:"checkpointed,omitempty"`
}

// MapPiece is [Off, Off+Len) of the mapping (relative to its start), held
// by the packet's descriptor FD (an index) at FileOffset.
type MapPiece struct {
	Off        int64 `json:"off"`
	Len        int64 `json:"len"`
	FD         int   `json:"fd"`
	FileOffset int64 `json:"file_offset"`
}

// MapArmed says where the client mapped the range; UFFD says the packet
// carries the userfaultfd the range is registered with.
type MapArmed struct {
	Addr   uint64 `json:"addr"`
	Length int64  `json:"length"`
	UFFD   bool   `json:"uffd,omitempty"`
	// Keep: the client keeps its own reference to the userfaultfd, so the
	// mapping stays protected when the daemon goes, and hands the mapping
	// to the next daemon (OpAdopt): a stop need not wait for it.
	Keep bool `json:"keep,omitempty"`
}

// MapAdopt asks a daemon to take over a mapping an earlier daemon granted
// (Map and Armed as they were), built from Pieces (as granted) over
// Files: the identity of the file behind each piece descriptor, by index.
type MapAdopt struct {
	Map    MapReq     `json:"map"`
	Armed  MapArmed   `json:"armed"`
	Pieces []MapPiece `json:"pieces"`
	Files  []FileID   `json:"files"`
}

// FileID is a file's identity (stat's st_dev and st_ino).
type FileID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

// MaxSessionPacket bounds one session packet (a packet must fit the
// socket's send buffer); MaxMapPieces bounds the pieces of one mapping so
// that its grant fits, and MaxMapFiles the descriptors of one grant.
const (
	MaxSessionPacket = 128 << 10
	MaxMapPieces     = 1024
	MaxMapFiles      = 64
)
