package state

// Region is a memory region the daemon created: a file reserved on tmpfs
// or hugetlbfs.
type Region struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	Hugetlb bool   `json:"hugetlb,omitempty"`
	// UID, Dev and Ino identify the file the daemon made: at every start
	// and every open it must still be that inode, owned by that uid, or
	// the daemon refuses it. Ino 0: a record from before daxsnap kept
	// them; the file must then be owned by the daemon's uid.
	UID uint32 `json:"uid,omitempty"`
	Dev uint64 `json:"dev,omitempty"`
	Ino uint64 `json:"ino,omitempty"`
	// Owner is who may map devices on the region (pmem create --uid
	// --gid --mode): a map's descriptor reaches the whole file, so a
	// non-root map needs the right to the region as well as to the
	// device. It is not the file's owner (the daemon keeps that). nil:
	// a record from before regions had owners, which gets the defaults
	// (uid 0, gid 6, mode 0600: only root maps).
	Owner *Owner `json:"owner,omitempty"`
	// Op is the operation in flight (create, remove); zero when none.
	Op Op `json:"op,omitzero"`
}

// Device is a mapped device as the daemon must rebuild it.
type Device struct {
	Name     string `json:"name"`
	UUID     string `json:"uuid,omitempty"`
	ReadOnly bool   `json:"read_only,omitempty"`
	// Live and Inactive are the table texts as `dmsetup table` prints
	// them; "" means the slot is empty (a loaded table is never empty).
	Live      string `json:"live,omitempty"`
	Inactive  string `json:"inactive,omitempty"`
	Suspended bool   `json:"suspended,omitempty"`
	// DeferredRemove: the device goes away when its last user closes it;
	// after a restart nothing has it open, so it is not rebuilt.
	DeferredRemove bool `json:"deferred_remove,omitempty"`
	// MergeDeferred: this snapshot merges into its origin when the last
	// user of both closes (snapshot merge --deferred); after a restart
	// nothing has them open, so the merge starts.
	MergeDeferred bool `json:"merge_deferred,omitempty"`
	// Op is the operation in flight (create, load, suspend, ...,
	// snapshot-create NAME); zero when none.
	Op Op `json:"op,omitzero"`
	// Owner is who may map the device (dmsetup create --uid --gid
	// --mode). nil in records written before daxsnap kept owners: such
	// a device has dmsetup's defaults (uid 0, gid 6, mode 0600), which
	// the daemon applies.
	Owner *Owner `json:"owner,omitempty"`
	// Autoextend is a snapshot's own autoextend policy (snapshot create
	// --autoextend-threshold); nil: the daemon's (serve's flags).
	Autoextend *Autoextend `json:"autoextend,omitempty"`
	// Number is the device's minor (dm.Device.Number), kept across
	// restarts as the kernel keeps a device's; nil in records written
	// before daxsnap kept it: such a device gets the lowest free one.
	Number *uint64 `json:"number,omitempty"`
	// Checkpoint is the durable home of a memory volume (daxsnap
	// checkpoint enable); nil: volatile.
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
}

// Checkpoint is where and how often a memory volume is checkpointed. It
// outlives the daemon, and the memory: when a start finds the volume's
// region files gone (a reboot), the volume comes back from the newest
// complete checkpoint in the image.
type Checkpoint struct {
	Path        string `json:"path"`    // the image (a file or block device)
	Journal     string `json:"journal"` // its redo journal
	IntervalMS  int64  `json:"interval_ms"`
	BufferBytes int64  `json:"buffer_bytes,omitempty"` // 0: the engine's default
	// Path s3://BUCKET/PREFIX: checkpoints to an object store, at
	// Endpoint ("": the usual environment), as volume Volume (the
	// device's name at enable, kept across renames); Journal is "".
	Endpoint string `json:"endpoint,omitempty"`
	Volume   string `json:"volume,omitempty"`
	// RestoringSeq, if not 0: the volume's memory is being restored on
	// demand from checkpoint RestoringSeq of the image (serve
	// --restore=lazy), and its region files hold only what is restored
	// or written since. A start continues that restore into them
	// instead of taking them as intact.
	RestoringSeq uint64 `json:"restoring_seq,omitempty"`
}

// Autoextend is LVM's snapshot_autoextend_threshold and _percent: when
// COW usage reaches Threshold percent, the COW grows by Percent of its
// size. Threshold 100 turns it off.
type Autoextend struct {
	Threshold int `json:"threshold"`
	Percent   int `json:"percent"`
}

// Owner is a device's owner uid and gid and its permission bits.
type Owner struct {
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	Mode uint32 `json:"mode"` // permission bits, 0 to 0777
}

func (r *Region) setOp(op Op) { r.Op = op }
func (d *Device) setOp(op Op) { d.Op = op }

func (r *Region) recordName() string { return r.Name }
func (d *Device) recordName() string { return d.Name }

// misfiled reports whether rec names something other than the key it is
// stored under: a state file edited by hand or damaged. Such a record is
// not trusted (Misfiled lists them); reading it as the thing its key or
// its name says would create or change another device or region.
func misfiled(rec any, key []byte) bool {
	n, ok := rec.(interface{ recordName() string })
	return ok && n.recordName() != string(key)
}
