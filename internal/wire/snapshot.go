package wire

import "time"

// SnapshotCreate takes a snapshot of a device the way LVM does (lvcreate
// -s): the origin keeps its name; its old table moves to ORIGIN-real and
// the snapshot is a new device NAME.
type SnapshotCreate struct {
	Origin string `json:"origin"`
	Name   string `json:"name"`
	// COW names an existing file (or /dev/mapper device) for the exception
	// store; its first bytes must be zero. Empty: the daemon creates
	// <state>/cow/NAME.cow of COWSize bytes and deletes it with the snapshot.
	COW     string `json:"cow,omitempty"`
	COWSize int64  `json:"cow_size,omitempty"` // bytes; 0: 10% of the origin, at least 8 MiB, at most a full copy
	// ChunkSize in bytes; 0 is 4 KiB (LVM's default).
	ChunkSize int64 `json:"chunk_size,omitempty"`
	// Transient uses store type N: exceptions only in the daemon's
	// memory, lost when it stops.
	Transient bool `json:"transient,omitempty"`
	// AutoextendThreshold and AutoextendPercent are LVM's
	// snapshot_autoextend_threshold and _percent for this snapshot: when
	// its COW is Threshold percent full (50 to 100; 100 is off), the
	// daemon grows the COW file by Percent of its size (default 20).
	// 0: the daemon's setting (serve --autoextend-threshold).
	AutoextendThreshold int `json:"autoextend_threshold,omitempty"`
	AutoextendPercent   int `json:"autoextend_percent,omitempty"`
	// Adopt brings back the snapshot a persistent COW already holds (its
	// header has the SnAp magic) over Origin, as lvconvert -s ORIGIN COW
	// does: `daxsnap cow adopt`. COW is required; the chunk size is the
	// header's. A COW in <state>/lost+found or <state>/cow becomes
	// <state>/cow/NAME.cow, the daemon's again.
	Adopt bool `json:"adopt,omitempty"`
	// ReadOnly makes the snapshot device read-only (lvcreate -s
	// --permission r): its writes fail, its COW only ever holds the
	// origin's old data.
	ReadOnly bool `json:"read_only,omitempty"`
}

// SnapshotExtend grows a snapshot's COW file (lvextend of a snapshot).
// Exactly one of Add and Size is set.
type SnapshotExtend struct {
	Add  int64 `json:"add,omitempty"`  // bytes to add (--size +N)
	Size int64 `json:"size,omitempty"` // the new size in bytes (--size N)
}

// SnapshotMerge merges a snapshot back into its origin (lvconvert --merge).
type SnapshotMerge struct {
	// NoWait returns once the merge has started; the daemon finishes it
	// in the background and `Snapshot` shows its progress.
	NoWait bool `json:"no_wait,omitempty"`
	// Deferred: if the origin (or the snapshot) is in use, record the
	// merge and start it when the last user closes, or at the next start
	// of the daemon, instead of refusing (LVM's "Delaying merge since
	// origin is open"). The answer then has MergeDeferred set.
	Deferred bool `json:"deferred,omitempty"`
}

// Snapshot states.
const (
	SnapshotActive      = "active"       // usable; exceptions accumulate
	SnapshotInvalid     = "invalid"      // COW full or I/O error: contents lost, I/O fails
	SnapshotOverflow    = "overflow"     // PO store full on a snapshot write: reads work
	SnapshotMerging     = "merging"      // being copied back onto the origin
	SnapshotMergeFailed = "merge_failed" // the merge stopped on an error
	SnapshotMerged      = "merged"       // the merge finished: the snapshot is gone
	SnapshotError       = "error"        // its table did not come back: see Note
)

// Snapshot describes a snapshot device (daxsnap snapshot list).
type Snapshot struct {
	Name   string `json:"name"`
	Origin string `json:"origin"` // the origin device, or the origin path if daxsnap did not set it up
	COW    string `json:"cow"`
	// COWOwned: daxsnap created the COW file and deletes it with the snapshot.
	COWOwned  bool   `json:"cow_owned"`
	Store     string `json:"store"`      // P, PO or N
	ChunkSize int64  `json:"chunk_size"` // bytes
	Sectors   uint64 `json:"sectors"`    // snapshot size, 512-byte sectors
	State     string `json:"state"`      // one of the Snapshot* states
	// From `dmsetup status`, in sectors; zero when State is not active,
	// overflow or merging.
	Allocated uint64  `json:"allocated_sectors"`
	Total     uint64  `json:"total_sectors"`
	Metadata  uint64  `json:"metadata_sectors"`
	Usage     float64 `json:"usage_percent"` // allocated/total, as lvs prints Data%
	// Exceptions is the number of origin chunks the COW holds.
	Exceptions uint64 `json:"exceptions"`
	// AutoextendThreshold and AutoextendPercent are the autoextend policy
	// in force (its own or the daemon's); 0 when it is off.
	AutoextendThreshold int            `json:"autoextend_threshold,omitempty"`
	AutoextendPercent   int            `json:"autoextend_percent,omitempty"`
	Merge               *MergeProgress `json:"merge,omitempty"`
	// MergedAt is when the merge finished (State merged).
	MergedAt time.Time `json:"merged_at,omitzero"`
	// MergeDeferred: a `snapshot merge --deferred` waits for the last
	// user of the origin (and of the snapshot) to close.
	MergeDeferred bool   `json:"merge_deferred,omitempty"`
	Note          string `json:"note,omitempty"`
	// ReadOnly: the snapshot device takes no writes (SnapshotCreate.ReadOnly).
	ReadOnly bool `json:"read_only,omitempty"`
}

// MergeProgress is how far a merge has come.
type MergeProgress struct {
	// Device runs the merge: the origin itself, or ORIGIN-merge while a
	// DAX origin stays suspended (an offline merge).
	Device  string `json:"device"`
	Offline bool   `json:"offline"`
	// Remaining exceptions to copy back; Start is how many there were
	// when this daemon took the merge up (after a restart: at the restart).
	Remaining uint64  `json:"remaining"`
	Start     uint64  `json:"start"`
	Percent   float64 `json:"percent"`
	Error     string  `json:"error,omitempty"`
}

// COWReport is what `daxsnap cow inspect` finds on a COW device.
type COWReport struct {
	Path              string         `json:"path"`
	DeviceBytes       int64          `json:"device_bytes"`
	LogicalBlockSize  int            `json:"logical_block_size"`
	Fresh             bool           `json:"fresh"` // magic 0: no store yet
	Magic             uint32         `json:"magic"`
	Valid             uint32         `json:"valid"`
	Version           uint32         `json:"version"`
	HeaderChunkSize   uint32         `json:"header_chunk_size"` // sectors, as stored
	ChunkSize         uint64         `json:"chunk_size"`        // sectors, once the header is valid
	ExceptionsPerArea uint64         `json:"exceptions_per_area"`
	DeviceChunks      uint64         `json:"device_chunks"`
	Areas             []COWArea      `json:"areas"`
	Exceptions        []COWException `json:"exceptions"`
	NextFree          uint64         `json:"next_free"`
	Allocated         uint64         `json:"allocated_sectors"`
	Total             uint64         `json:"total_sectors"`
	Metadata          uint64         `json:"metadata_sectors"`
	Notes             []string       `json:"notes,omitempty"`
	Problem           string         `json:"problem,omitempty"`
}

// COWArea is one metadata area of a COW device.
type COWArea struct {
	Index     uint64 `json:"index"`
	Chunk     uint64 `json:"chunk"`
	Records   uint64 `json:"records"`
	Full      bool   `json:"full"`
	DirtyTail bool   `json:"dirty_tail,omitempty"`
}

// COWException maps an origin chunk to the COW chunk holding its old data.
type COWException struct {
	Old uint64 `json:"old_chunk"`
	New uint64 `json:"new_chunk"`
}
