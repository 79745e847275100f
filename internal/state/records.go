package state

// Region is a memory region the daemon created: a file reserved on tmpfs
// or hugetlbfs.
type Region struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	Hugetlb bool   `json:"hugetlb,omitempty"`
	// Op is the operation in flight ("create", "remove"), "" when none.
	Op string `json:"op,omitempty"`
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
	// Op is the operation in flight ("create", "load", "suspend", ...),
	// "" when none.
	Op string `json:"op,omitempty"`
}

func (r *Region) setOp(op string) { r.Op = op }
func (d *Device) setOp(op string) { d.Op = op }
