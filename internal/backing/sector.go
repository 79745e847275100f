package backing

// SectorSize is the size of a Sector in bytes: 512, as in dmsetup and the
// kernel, whatever a device's logical block size.
const SectorSize = 512

// Sector counts 512-byte sectors (the kernel's sector_t). It is the unit
// of table start and length fields (dm.Sector) and of chunk sizes and
// usage figures in exception stores (exstore.Sector): both are this type,
// which lives here because backing is the package below both.
type Sector uint64

// Bytes converts a sector count to bytes.
func (s Sector) Bytes() int64 { return int64(s) * SectorSize }

// StatusType selects what a Status call prints, as dmsetup's status and
// table verbs do. Targets (dm.Target.Status) and exception stores
// (exstore.Store.Status) take it, as the kernel's status_type_t; dm and
// exstore re-export it with its values.
type StatusType int

const (
	// StatusInfo is the text for `dmsetup status`.
	StatusInfo StatusType = iota
	// StatusTable is the text for `dmsetup table`: a target's constructor
	// arguments, or a store's part of them; parsing them again must build
	// an identical target.
	StatusTable
)
