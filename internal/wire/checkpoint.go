package wire

import "time"

// Checkpoints make a memory volume durable: the daemon writes consistent
// cuts of it to an image on disk, only what changed since the last one,
// and brings the volume back from the newest complete one when its memory
// is gone (after a reboot). Routes, on a device:
//
//	GET    /v1/devices/{name}/checkpoint   Durability
//	PUT    /v1/devices/{name}/checkpoint   CheckpointEnable → Durability
//	POST   /v1/devices/{name}/checkpoint   take one now, wait → Durability
//	DELETE /v1/devices/{name}/checkpoint   stop checkpointing (the image stays)

// CheckpointEnable turns checkpoints on for a device (daxsnap checkpoint
// enable VOL --to PATH --interval 30s).
type CheckpointEnable struct {
	// Path is the image: a file on a disk file system (made if missing)
	// or a block device, at least as large as the device.
	Path string `json:"path"`
	// Journal is the image's redo journal; "" is Path + ".journal".
	Journal string `json:"journal,omitempty"`
	// IntervalMS is the time between checkpoints in milliseconds; 0 is
	// DefaultCheckpointIntervalMS. Checkpoints are also taken on demand
	// (POST) and by Mapping.Persist.
	IntervalMS int64 `json:"interval_ms,omitempty"`
	// BufferBytes caps the copy-on-write buffer that keeps a checkpoint's
	// chunks while writers change them; 0 is the engine's default.
	BufferBytes int64 `json:"buffer_bytes,omitempty"`
	// Endpoint is the object store's URL when Path is s3://BUCKET/PREFIX
	// ("": AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, or AWS S3).
	Endpoint string `json:"endpoint,omitempty"`
}

// DefaultCheckpointIntervalMS is the interval of CheckpointEnable without one.
const DefaultCheckpointIntervalMS = 30_000

// Durability states (Durability.State).
const (
	DurabilityVolatile     = "volatile"     // memory only: lost at a reboot
	DurabilityCheckpointed = "checkpointed" // written back to Path every IntervalMS
)

// Durability says how durable a device is: volatile, or checkpointed, and
// then where to, how often and how recently.
type Durability struct {
	Device string `json:"device"`
	State  string `json:"state"` // DurabilityVolatile or DurabilityCheckpointed
	// Text is the state for people, as `info` and `status` print it:
	// "volatile", or "checkpointed: last complete 12 s ago (interval
	// 30 s), 1.2 GiB written".
	Text        string `json:"text"`
	Path        string `json:"path,omitempty"`
	Journal     string `json:"journal,omitempty"`
	Endpoint    string `json:"endpoint,omitempty"` // of an s3:// Path
	IntervalMS  int64  `json:"interval_ms,omitempty"`
	BufferBytes int64  `json:"buffer_bytes,omitempty"`
	// Last is the newest complete checkpoint in the image; nil before
	// the first.
	Last *CheckpointInfo `json:"last,omitempty"`
	// Written is the bytes written back to the image since checkpoints
	// were enabled (or the daemon started).
	Written int64 `json:"written"`
	// Running: a checkpoint is being written now.
	Running bool `json:"running,omitempty"`
	// Error is why the last checkpoint failed ("" if it did not): the
	// volume is unharmed and the previous checkpoint stays in the image.
	Error string `json:"error,omitempty"`
	// Restored names the checkpoint the volume was brought back from at
	// this daemon's start, if it was.
	Restored *CheckpointInfo `json:"restored,omitempty"`
	// Restoring: the volume serves while its memory is restored on
	// demand from checkpoint Seq (serve --restore=lazy); checkpoints
	// start once it is complete.
	Restoring *RestoreProgress `json:"restoring,omitempty"`
}

// CheckpointInfo is one complete checkpoint of an image.
type CheckpointInfo struct {
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`           // when its cut was made
	Bytes      int64     `json:"bytes"`          // written back for it
	Chunks     int64     `json:"chunks"`         // chunks written back for it
	DurationMS int64     `json:"duration_ms"`    // cut to durable, if this daemon took it
	Full       bool      `json:"full,omitempty"` // every chunk, not only the changed ones
}

// RestoreProgress is how far a lazy restore is.
type RestoreProgress struct {
	Seq   uint64 `json:"seq"`   // the checkpoint restored
	Done  int64  `json:"done"`  // bytes restored so far
	Total int64  `json:"total"` // the volume's size
}
