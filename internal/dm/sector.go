package dm

import "github.com/daxsnap/daxsnap/internal/backing"

// SectorSize is the unit of table start and length fields: 512 bytes, as in
// dmsetup and the kernel, whatever the devices' logical block size.
const SectorSize = backing.SectorSize

// Sector counts 512-byte sectors (the kernel's sector_t); it is
// backing.Sector, re-exported for callers of dm.
type Sector = backing.Sector

// MaxSectors bounds table fields so that byte offsets fit in an int64.
const MaxSectors = Sector(1<<63-1) / SectorSize
