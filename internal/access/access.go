// Package access is the Unix permission rule for mapped devices: an
// owner uid and gid and permission bits, as `dmsetup create --uid --gid
// --mode` gives the nodes under /dev/mapper, and the credentials of the
// process a request comes from (SO_PEERCRED and its supplementary
// groups). It imports nothing of daxsnap.
package access

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// dmsetup's defaults for a new device node (libdevmapper's
// DM_DEVICE_UID, DM_DEVICE_GID, DM_DEVICE_MODE): root, group disk, 0600.
const (
	DefaultUID  uint32 = 0
	DefaultGID  uint32 = 6
	DefaultMode uint32 = 0o600
)

// NoID is (uid_t)-1, which chown(2) reads as "leave unchanged": never an
// owner.
const NoID = ^uint32(0)

// Owner is who owns a device and what its permission bits allow.
type Owner struct {
	UID, GID uint32
	Mode     uint32 // permission bits only, 0 to 0777
}

// Default is dmsetup's owner for a device created without --uid, --gid,
// --mode.
func Default() Owner { return Owner{UID: DefaultUID, GID: DefaultGID, Mode: DefaultMode} }

// Check says what is wrong with o, if anything.
func (o Owner) Check() error {
	switch {
	case o.UID == NoID:
		return fmt.Errorf("uid %d is (uid_t)-1, which no process has: give a real uid", o.UID)
	case o.GID == NoID:
		return fmt.Errorf("gid %d is (gid_t)-1, which no process has: give a real gid", o.GID)
	case o.Mode&^0o777 != 0:
		return fmt.Errorf("mode %#o has bits beyond the permission bits 0777: give an octal mode from 0000 to 0777", o.Mode)
	}
	return nil
}

// String is "uid U, gid G, mode 0MMM".
func (o Owner) String() string {
	return fmt.Sprintf("uid %d, gid %d, mode %s", o.UID, o.GID, FormatMode(o.Mode))
}

// FormatMode prints permission bits as four octal digits ("0600").
func FormatMode(m uint32) string { return fmt.Sprintf("%04o", m) }

// ParseMode reads an octal mode as chmod and dmsetup --mode take it
// ("600", "0600"); only the permission bits 0777 are allowed.
func ParseMode(s string) (uint32, error) {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("mode %q is not an octal number: give one such as 0600 or 0660", s)
	}
	if v&^0o777 != 0 {
		return 0, fmt.Errorf("mode %q has bits beyond the permission bits 0777 (setuid, setgid, sticky or file type): give an octal mode from 0000 to 0777", s)
	}
	return uint32(v), nil
}

// ParseOwner reads the owner a request asks for (--uid, --gid, --mode,
// each nil or "" when left out): dmsetup's defaults for what it leaves
// out. The error says what is wrong with it.
func ParseOwner(uid, gid *uint32, mode string) (Owner, error) {
	o := Default()
	if uid != nil {
		o.UID = *uid
	}
	if gid != nil {
		o.GID = *gid
	}
	if mode != "" {
		m, err := ParseMode(mode)
		if err != nil {
			return o, err
		}
		o.Mode = m
	}
	return o, o.Check()
}

// Peer is the process at the other end of a unix socket: its credentials
// at connect time (SO_PEERCRED) and its supplementary groups.
type Peer struct {
	PID      int
	UID, GID uint32
	Groups   []uint32 // supplementary groups; nil if unknown
}

// InGroup reports whether gid is p's primary or a supplementary group.
func (p Peer) InGroup(gid uint32) bool { return p.GID == gid || slices.Contains(p.Groups, gid) }

// Access is what a request needs.
type Access uint32

const (
	Read  Access = 4 // the r bit of each class
	Write Access = 2 // the w bit of each class
)

// Need is what a map needs: read, and write too for a writable map.
func Need(write bool) Access {
	if write {
		return Read | Write
	}
	return Read
}

func (a Access) String() string {
	if a&Write != 0 {
		return "read and write"
	}
	return "read"
}

// Class names the permission bits that apply to p ("owner", "group" or
// "other") and returns them.
func (o Owner) Class(p Peer) (string, Access) {
	switch {
	case p.UID == o.UID:
		return "owner", Access(o.Mode>>6) & 7
	case p.InGroup(o.GID):
		return "group", Access(o.Mode>>3) & 7
	}
	return "other", Access(o.Mode) & 7
}

// Allows reports whether p may have access a to a device owned by o, by
// the file permission rules: root may do anything; otherwise the owner's
// bits apply if p's uid owns it, else the group's if the device's gid is
// p's primary or a supplementary group, else the others'. As for files,
// only that one class counts: an owner whose bits deny is refused even if
// the others' bits would allow.
func (o Owner) Allows(p Peer, a Access) bool {
	if p.UID == 0 {
		return true
	}
	_, bits := o.Class(p)
	return bits&a == a
}

// ErrPermission is a request the owner and mode do not allow.
var ErrPermission = errors.New("permission denied")
