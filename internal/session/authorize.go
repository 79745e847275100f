package session

import (
	"fmt"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// rootOnly is the Authorize of a server whose Config has none: root and
// uid own (the daemon's) may map anything, nobody else anything.
func rootOnly(own uint32) func(access.Peer, *dm.Device, access.Access) error {
	return func(p access.Peer, dev *dm.Device, _ access.Access) error {
		if p.UID == 0 || p.UID == own {
			return nil
		}
		return fmt.Errorf("%w: uid %d may not map %s: this server lets only root and uid %d map devices",
			access.ErrPermission, p.UID, dev.Name(), own)
	}
}

// byFileMode is the AuthorizeFile of a server whose Config has none: the
// file's own owner and mode decide; root and uid own may have any file.
func byFileMode(own uint32) func(access.Peer, *dm.Device, string, int, access.Access) error {
	return func(p access.Peer, dev *dm.Device, path string, fd int, need access.Access) error {
		if p.UID == own {
			return nil
		}
		o, err := access.OwnerOfFile(fd)
		if err != nil {
			return fmt.Errorf("map of %s: %s: %w", dev.Name(), path, err)
		}
		if o.Allows(p, need) {
			return nil
		}
		return fmt.Errorf("%w: uid %d may not map %s: its memory is in %s (%s), and a map hands out a descriptor of the whole file, which does not allow uid %d %s",
			access.ErrPermission, p.UID, dev.Name(), path, o, p.UID, need)
	}
}

// learnGroups completes the peer's credentials with its supplementary
// groups, read once per session (while the process that connected
// exists). If they cannot be read, only the primary gid counts.
func (x *session) learnGroups() {
	if x.peer.UID == 0 {
		return // root needs no group
	}
	groups, err := access.Groups(x.peer.PID, x.peer.UID)
	if err != nil {
		x.srv.log.Debug("supplementary groups unknown: only the primary gid counts", append(x.log(), "gid", x.peer.GID, "err", err)...)
		return
	}
	x.peer.Groups = groups
}
