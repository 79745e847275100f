package dm

// SectorSize is the unit of table start and length fields: 512 bytes, as in
// dmsetup and the kernel, whatever the devices' logical block size.
const SectorSize = 512

// Sector counts 512-byte sectors (the kernel's sector_t).
type Sector uint64

// Bytes converts a sector count to bytes.
func (s Sector) Bytes() int64 { return int64(s) * SectorSize }

// MaxSectors bounds table fields so that byte offsets fit in an int64.
const MaxSectors = Sector(1<<63-1) / SectorSize
