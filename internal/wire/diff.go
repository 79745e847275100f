package wire

// Extent is a byte range of a device: Len bytes at Off.
type Extent struct {
	Off int64 `json:"off"`
	Len int64 `json:"len"`
}

// SnapshotDiff is the answer to "which chunks changed between snapshot
// From and To" (GET /v1/snapshots/{from}/diff?to=TO): To is a newer
// snapshot of the same origin, or the origin itself (the live device,
// at the instant of the answer). Extents are sorted, disjoint, merged
// where adjacent, in bytes of the devices, at chunk granularity (the last
// one may end at Size, inside a chunk). Reading To at those extents and
// writing them over a copy of From reproduces To; everything else is
// the same in both.
type SnapshotDiff struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Origin string `json:"origin"`
	// ChunkSize is From's chunk size in bytes: the granularity of the
	// extents. Size is the devices' size in bytes.
	ChunkSize int64    `json:"chunk_size"`
	Size      int64    `json:"size"`
	Extents   []Extent `json:"extents"`
	// Changed is the sum of the extents' lengths.
	Changed int64 `json:"changed"`
	// Full: nothing is known of what changed (To was taken before
	// tracking, or without it), and the caller asked for the whole device
	// rather than an error (SnapshotDiffRequest.Full); Why says why.
	Full bool   `json:"full,omitempty"`
	Why  string `json:"why,omitempty"`
}

// SnapshotDiffRequest asks for the changes from snapshot From to To (a
// newer snapshot of the same origin, or "" or the origin's name for the
// live origin).
type SnapshotDiffRequest struct {
	From string `json:"from"`
	To   string `json:"to,omitempty"`
	// Full answers with the whole device when the changes are not known
	// (see SnapshotDiff.Full) instead of refusing; never when they are.
	Full bool `json:"full,omitempty"`
}
