package daemon

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/pmem"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Device ownership, as dmsetup create --uid --gid --mode gives a node
// under /dev/mapper: set at creation (dmsetup's defaults otherwise),
// recorded in the state file, unchanged by rename, shown by info. It
// decides who may map a device through the DAX session socket; the
// control API has its own rule (changes need root or the daemon's uid).
// The owner is kept in the device's devState: devices the daemon makes
// itself (snapshots, ORIGIN-real, ORIGIN-merge) have none and so have the
// defaults.

// ownerOf reads the owner a create request asks for: dmsetup's defaults
// for what it leaves out.
func ownerOf(req wire.DeviceCreate) (access.Owner, error) {
	return pmem.ParseOwner("create "+req.Name, req.UID, req.GID, req.Mode)
}

// restoredOwner is the owner a record gives its device: a record from
// before daxsnap kept owners gets the defaults. So does one whose owner
// does not check (a mode of 99999, uid -1: a state file edited by hand
// or damaged), and problem then says so, for the device's note.
func restoredOwner(rec state.Device) (o access.Owner, problem string) {
	o, err := pmem.RecordedOwner(rec.Owner)
	if err != nil {
		return o, fmt.Sprintf("Its recorded owner is not valid (%v), so it has the defaults (%s), which only root may map: recreate it with the owner you want (daxsnap create %s --uid --gid --mode).",
			err, access.Default(), rec.Name)
	}
	return o, ""
}

// authorizeMap is the DAX session server's Authorize: may peer map dev
// with need (access.Read, and access.Write for a writable map)? Root and
// the daemon's own uid may map anything: the daemon's uid already has
// every file the daemon opens and could ptrace the daemon itself, so
// refusing it protects nothing.
// Anyone else needs read permission, and write permission too for a
// writable map, by the device's owner, group and mode (access.Owner.Allows).
func (a *authz) authorizeMap(peer access.Peer, dev *dm.Device, need access.Access) error {
	return mayMap(a.devs.owner(dev), uint32(os.Geteuid()), peer, dev.Name(), need)
}

// authorizeMapFile is the DAX session server's AuthorizeFile: may peer
// have the descriptor of the file at path (fd), which a map of dev hands
// out? The descriptor reaches the whole file, so for a region of the
// daemon the region's own owner and mode decide (pmem create --uid
// --gid --mode), and for any other file (a DAX node, a file root named in
// a table) the file's own. Root and the daemon's uid may have anything.
func (a *authz) authorizeMapFile(peer access.Peer, dev *dm.Device, path string, fd int, need access.Access) error {
	self := uint32(os.Geteuid())
	if peer.UID == self || peer.UID == 0 {
		return nil
	}
	act := mapAct(need)
	who := fmt.Sprintf("uid %d (gid %d, pid %d)", peer.UID, peer.GID, peer.PID)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("map of %s: fstat %s: %w", dev.Name(), path, err)
	}
	if rec, o, ok := a.regions.OwnerOf(path, &st); ok {
		return mayAccess(o, self, peer, who, act, fmt.Sprintf("the memory of %s, region %s (%s)", dev.Name(), rec.Name, rec.Path), need, fmt.Sprintf(
			"a map hands out a descriptor of the whole region file, which reaches every device on the region, so it needs the right to the region as well as to %s: "+
				"ask root for a region of your own (daxsnap pmem create NAME --size SIZE --uid %d [--gid GID --mode MODE]) with the device on it, "+
				"or for a region whose --uid/--gid/--mode give you all of it",
			dev.Name(), peer.UID))
	}
	o := access.Owner{UID: st.Uid, GID: st.Gid, Mode: st.Mode & 0o777}
	return mayAccess(o, self, peer, who, act, fmt.Sprintf("the memory of %s, the file %s", dev.Name(), path), need, fmt.Sprintf(
		"a map hands out a descriptor of that whole file, so it needs the right to the file as well as to %s: ask root to chown or chmod the file, "+
			"or for a region of your own (daxsnap pmem create NAME --size SIZE --uid %d) with the device on it",
		dev.Name(), peer.UID))
}

// mapAct names a map that needs need, for refusals.
func mapAct(need access.Access) string {
	if need&access.Write != 0 {
		return "make a writable map of"
	}
	return "make a read-only map of"
}

// mayMap is authorizeMap's rule, with the daemon's uid self.
func mayMap(o access.Owner, self uint32, p access.Peer, name string, need access.Access) error {
	return mayAccess(o, self, p, fmt.Sprintf("uid %d (gid %d, pid %d)", p.UID, p.GID, p.PID), mapAct(need), name, need,
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
