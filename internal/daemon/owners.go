package daemon

import (
	"fmt"
	"os"
	"sync"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Device ownership, as dmsetup create --uid --gid --mode gives a node
// under /dev/mapper: set at creation (dmsetup's defaults otherwise),
// recorded in the state file, unchanged by rename, shown by info. It
// decides who may map a device through the DAX session socket; the
// control API has its own rule (changes need root or the daemon's uid).

// owners holds each live device's owner. Keyed by device, not name, so
// that a rename keeps it; devices the daemon makes itself (snapshots,
// ORIGIN-real, ORIGIN-merge) have none and so have the defaults.
type owners struct {
	mu sync.Mutex
	m  map[*dm.Device]access.Owner
}

func (o *owners) get(dev *dm.Device) access.Owner {
	o.mu.Lock()
	defer o.mu.Unlock()
	if v, ok := o.m[dev]; ok {
		return v
	}
	return access.Default()
}

func (o *owners) set(dev *dm.Device, v access.Owner) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = make(map[*dm.Device]access.Owner)
	}
	o.m[dev] = v
}

func (o *owners) forget(dev *dm.Device) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.m, dev)
}

// ownerOf reads the owner a create request asks for: dmsetup's defaults
// for what it leaves out.
func ownerOf(req wire.DeviceCreate) (access.Owner, error) {
	o := access.Default()
	if req.UID != nil {
		o.UID = *req.UID
	}
	if req.GID != nil {
		o.GID = *req.GID
	}
	if req.Mode != "" {
		m, err := access.ParseMode(req.Mode)
		if err != nil {
			return o, errorf(dm.ErrInvalidArgument, "create %s: %v", req.Name, err)
		}
		o.Mode = m
	}
	if err := o.Check(); err != nil {
		return o, errorf(dm.ErrInvalidArgument, "create %s: %v", req.Name, err)
	}
	return o, nil
}

// recordOwner is o as the state file keeps it.
func recordOwner(o access.Owner) *state.Owner {
	return &state.Owner{UID: o.UID, GID: o.GID, Mode: o.Mode}
}

// restoredOwner is the owner a record gives its device: a record from
// before daxsnap kept owners gets the defaults. So does one whose owner
// does not check (a mode of 99999, uid -1: a state file edited by hand
// or damaged), and problem then says so, for the device's note.
func restoredOwner(rec state.Device) (o access.Owner, problem string) {
	if rec.Owner == nil {
		return access.Default(), ""
	}
	o = access.Owner{UID: rec.Owner.UID, GID: rec.Owner.GID, Mode: rec.Owner.Mode}
	if err := o.Check(); err != nil {
		return access.Default(), fmt.Sprintf("Its recorded owner is not valid (%v), so it has the defaults (%s), which only root may map: recreate it with the owner you want (daxsnap create %s --uid --gid --mode).",
			err, access.Default(), rec.Name)
	}
	return o, ""
}

// authorizeMap is the DAX session server's Authorize: may peer map dev
// (for writing if write)? Root and the daemon's own uid may map
// anything: the daemon's uid already has every file the daemon opens
// and could ptrace the daemon itself, so refusing it protects nothing.
// Anyone else needs read permission, and write permission too for a
// writable map, by the device's owner, group and mode (access.Owner.Allows).
func (d *Daemon) authorizeMap(peer access.Peer, dev *dm.Device, write bool) error {
	return mayMap(d.owners.get(dev), uint32(os.Geteuid()), peer, dev.Name(), write)
}

// mayMap is authorizeMap's rule, with the daemon's uid self.
func mayMap(o access.Owner, self uint32, p access.Peer, name string, write bool) error {
	act := "make a read-only map of"
	if write {
		act = "make a writable map of"
	}
	return mayAccess(o, self, p, fmt.Sprintf("uid %d (gid %d, pid %d)", p.UID, p.GID, p.PID), act, name, access.Need(write),
		fmt.Sprintf("recreate the device with --uid/--gid/--mode that do (daxsnap create %s --uid %d ...), or ask root to map it", name, p.UID))
}

// mayAccess is the rule of every door to a device's data (DAX maps,
// NBD): root and the daemon's uid self may do anything, anyone else what
// the device's owner, group and mode allow (access.Owner.Allows). A
// refusal says that who may not act on name, why, and what to do
// instead.
func mayAccess(o access.Owner, self uint32, p access.Peer, who, act, name string, need access.Access, instead string) error {
	if p.UID == self || o.Allows(p, need) {
		return nil
	}
	class, bits := o.Class(p)
	return fmt.Errorf("%w: %s may not %s %s: it is owned by %s, and the %s bits (%s), which apply to %s, do not allow %s: %s",
		access.ErrPermission, who, act, name, o, class, rwx(bits), whom(p), need, instead)
}

// whom names p shortly: its uid, or "an anonymous client".
func whom(p access.Peer) string {
	if p.UID == access.NoID {
		return "an anonymous client"
	}
	return fmt.Sprintf("uid %d", p.UID)
}

// rwx spells permission bits as ls does ("r--").
func rwx(a access.Access) string {
	b := []byte("---")
	if a&access.Read != 0 {
		b[0] = 'r'
	}
	if a&access.Write != 0 {
		b[1] = 'w'
	}
	if a&1 != 0 {
		b[2] = 'x'
	}
	return string(b)
}
