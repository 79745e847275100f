package wire

// APIVersion is the path prefix of every route.
const APIVersion = "v1"

// Version answers GET /v1/version.
type Version struct {
	Version   string `json:"version"`    // daxsnap release
	API       string `json:"api"`        // APIVersion
	GoVersion string `json:"go_version"` // toolchain the daemon was built with
}

// Target is one registered target type (dmsetup targets).
type Target struct {
	Name    string `json:"name"`
	Version [3]int `json:"version"`
}

// PmemCreate asks for a memory region: a file of Size bytes on tmpfs (or
// hugetlbfs), reserved up front, that tables name by its Path.
type PmemCreate struct {
	Name    string `json:"name"`
	Size    int64  `json:"size"`              // bytes
	Dir     string `json:"dir,omitempty"`     // tmpfs or hugetlbfs mount; default /dev/shm (/dev/hugepages with Hugetlb)
	Hugetlb bool   `json:"hugetlb,omitempty"` // use huge pages (Dir must be hugetlbfs)
	// UID, GID and Mode are who may map devices on the region, as for
	// DeviceCreate: a map hands out a descriptor of the whole region
	// file, so a non-root map needs the right to the region too
	// (docs/dax.md). Absent: uid 0, gid 6, mode "0600" (only root).
	UID  *uint32 `json:"uid,omitempty"`
	GID  *uint32 `json:"gid,omitempty"`
	Mode string  `json:"mode,omitempty"` // octal permission bits, "0000" to "0777"
}

// Pmem describes a memory region.
type Pmem struct {
	Name       string   `json:"name"`
	Path       string   `json:"path"` // what a table names, e.g. `0 131072 linear PATH 0`
	Size       int64    `json:"size"`
	Hugetlb    bool     `json:"hugetlb"`
	Filesystem string   `json:"filesystem"`        // tmpfs or hugetlbfs
	UsedBy     []string `json:"used_by,omitempty"` // devices whose tables name it
	Note       string   `json:"note,omitempty"`    // why it is unusable, if it is
	// UID, GID and Mode: who may map devices on it (PmemCreate).
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	Mode string `json:"mode"`
}

// DeviceCreate creates a mapped device (dmsetup create). With Table it is
// loaded and resumed; with NoTable it has no table.
//
// UID, GID and Mode are the device's owner and permission bits, as
// dmsetup create --uid --gid --mode give its node: they decide who may
// map it through the DAX session socket (docs/dax.md). Absent, they are
// dmsetup's defaults: uid 0, gid 6 (disk), mode "0600".
type DeviceCreate struct {
	Name     string  `json:"name"`
	UUID     string  `json:"uuid,omitempty"`
	Table    string  `json:"table,omitempty"`
	ReadOnly bool    `json:"read_only,omitempty"`
	NoTable  bool    `json:"no_table,omitempty"`
	UID      *uint32 `json:"uid,omitempty"`
	GID      *uint32 `json:"gid,omitempty"`
	Mode     string  `json:"mode,omitempty"` // octal permission bits, "0000" to "0777"
}

// SetOwner changes a device's owner, group or permission bits in place
// (daxsnap set NAME --uid --gid --mode, as chown and chmod of a dmsetup
// node): what is absent stays as it is.
type SetOwner struct {
	UID  *uint32 `json:"uid,omitempty"`
	GID  *uint32 `json:"gid,omitempty"`
	Mode string  `json:"mode,omitempty"` // octal permission bits, "0000" to "0777"
}

// Load puts a table in a device's inactive slot (dmsetup load).
type Load struct {
	Table string `json:"table"`
}

// Suspend holds a device's I/O (dmsetup suspend).
type Suspend struct {
	NoFlush bool `json:"no_flush,omitempty"`
}

// Remove carries dmsetup remove's flags (query parameters force, deferred).
type Remove struct {
	Force    bool `json:"force,omitempty"`
	Deferred bool `json:"deferred,omitempty"`
}

// Rename gives a device a new name (dmsetup rename).
type Rename struct {
	NewName string `json:"new_name"`
}

// Message is delivered to the target covering Sector (dmsetup message).
type Message struct {
	Sector uint64   `json:"sector"`
	Args   []string `json:"args"`
}

// MessageReply is the target's answer, often empty.
type MessageReply struct {
	Reply string `json:"reply"`
}

// Info describes a mapped device (dmsetup info).
type Info struct {
	Name           string `json:"name"`
	UUID           string `json:"uuid,omitempty"`
	Suspended      bool   `json:"suspended"`
	ReadOnly       bool   `json:"read_only"`
	DeferredRemove bool   `json:"deferred_remove"`
	LiveTable      bool   `json:"live_table"`
	InactiveTable  bool   `json:"inactive_table"`
	OpenCount      int    `json:"open_count"`
	EventNr        uint64 `json:"event_nr"`
	TargetCount    int    `json:"target_count"`
	Sectors        uint64 `json:"sectors"`            // live table size in 512-byte sectors
	Capabilities   string `json:"capabilities"`       // what the live table offers now
	FixedCaps      string `json:"fixed_capabilities"` // dax/sync the device may never lose
	Note           string `json:"note,omitempty"`     // daxsnap's remark, e.g. why the table is `error`
	UID            uint32 `json:"uid"`                // owner (DeviceCreate.UID)
	GID            uint32 `json:"gid"`                // group (DeviceCreate.GID)
	Mode           string `json:"mode"`               // permission bits, four octal digits ("0600")
	// Holders are who holds the device open (NBD clients, FUSE files,
	// DAX mappings), by pid and uid where they are known.
	Holders []Holder `json:"holders,omitempty"`
	// Durability is how durable a memory volume is (volatile, or
	// checkpointed); nil for a device not on volatile memory, which is as
	// durable as what its table maps.
	Durability *Durability `json:"durability,omitempty"`
	// Major and Minor are the device's numbers, as the kernel's device
	// mapper gives them (dm's dynamic major, 254; the minor is the lowest
	// free one at creation and is kept across daemon restarts).
	Major uint32 `json:"major"`
	Minor uint64 `json:"minor"`
	// ReadAhead is the read-ahead in sectors dmsetup info shows; 0
	// without a live table.
	ReadAhead uint64 `json:"read_ahead"`
	// Deps are the devices the live table uses (dmsetup deps), in the
	// kernel's order: the last opened first.
	Deps []Dep `json:"deps,omitempty"`
}

// Dep is one device a table uses (Info.Deps).
type Dep struct {
	// Name is the mapped device's name if the table uses one of
	// daxsnap's devices, else "".
	Name string `json:"name,omitempty"`
	// Path is the file or node the table names: /dev/mapper/NAME for a
	// mapped device.
	Path string `json:"path"`
	// Block is set for a mapped device or a block device, whose numbers
	// Major and Minor are; a file has none.
	Block bool   `json:"block,omitempty"`
	Major uint32 `json:"major,omitempty"`
	Minor uint32 `json:"minor,omitempty"`
}

// Holder is one user of a device (Info.Holders).
type Holder struct {
	Kind  string `json:"kind"`  // "nbd", "fuse", "dax", "table", "io"
	Who   string `json:"who"`   // e.g. "uid 1000 (gid 1000, pid 42) on unix:..."
	PID   int    `json:"pid"`   // -1 when unknown
	UID   int    `json:"uid"`   // -1 when unknown
	Count int    `json:"count"` // opens (or DAX mappings) it has
}

// Disconnected is what DisconnectDevice did (daxsnap disconnect).
type Disconnected struct {
	Name      string `json:"name"`
	NBD       int    `json:"nbd"`        // NBD connections closed
	FUSEFiles int    `json:"fuse_files"` // open FUSE files revoked
}

// Text is a device's table or status text (dmsetup table, dmsetup status).
type Text struct {
	Name     string `json:"name"`
	Inactive bool   `json:"inactive"`
	Text     string `json:"text"`           // lines "start length type args\n"; "" without a table
	Note     string `json:"note,omitempty"` // as Info.Note
	// Durability is as Info.Durability, with the live status only.
	Durability *Durability `json:"durability,omitempty"`
}
