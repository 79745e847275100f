package pmem

import (
	"fmt"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/state"
	"golang.org/x/sys/unix"
)

// A region's owner and mode (pmem create --uid --gid --mode) decide who
// may map it: a map hands out a descriptor of the whole region file.

// ParseOwner reads the owner a request of op asks for (--uid, --gid,
// --mode of pmem create, and of create for a device, each nil or "" when
// left out): dmsetup's defaults for what it leaves out.
func ParseOwner(op string, uid, gid *uint32, mode string) (access.Owner, error) {
	o, err := access.ParseOwner(uid, gid, mode)
	if err != nil {
		return o, errorf(dm.ErrInvalidArgument, "%s: %v", op, err)
	}
	return o, nil
}

// RecordOwner is o as the state file keeps it (a region's, a device's).
func RecordOwner(o access.Owner) *state.Owner {
	return &state.Owner{UID: o.UID, GID: o.GID, Mode: o.Mode}
}

// RecordedOwner is the owner a record keeps (a region's, a device's;
// RecordOwner's inverse): the defaults for a record without one, and the
// defaults with the reason when the recorded one does not check.
func RecordedOwner(r *state.Owner) (access.Owner, error) {
	if r == nil {
		return access.Default(), nil
	}
	o := access.Owner{UID: r.UID, GID: r.GID, Mode: r.Mode}
	if err := o.Check(); err != nil {
		return access.Default(), err
	}
	return o, nil
}

// regionOwner is the owner of a region: the defaults for a record from
// before regions had owners, and for one whose owner does not check
// (problem says so).
func regionOwner(rec state.Region) (o access.Owner, problem string) {
	o, err := RecordedOwner(rec.Owner)
	if err != nil {
		return o, fmt.Sprintf("its recorded owner is not valid (%v), so it has the defaults (%s), which only root may map", err, access.Default())
	}
	return o, ""
}

// OwnerOf is the region whose file is st (path, as a table names it), if
// any, and its owner: by inode, or by path for a record from before the
// daemon kept inodes.
func (m *Manager) OwnerOf(path string, st *unix.Stat_t) (state.Region, access.Owner, bool) {
	rec, ok := m.regionOf(path, st)
	if !ok {
		return rec, access.Owner{}, false
	}
	o, _ := regionOwner(rec)
	return rec, o, true
}
