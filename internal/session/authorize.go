package session

import (
	"fmt"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// rootOnly is the Authorize of a server whose Config has none: root and
// uid own (the daemon's) may map anything, nobody else anything.
func rootOnly(own uint32) func(access.Peer, *dm.Device, bool) error {
	return func(p access.Peer, dev *dm.Device, write bool) error {
		if p.UID == 0 || p.UID == own {
			return nil
		}
		return fmt.Errorf("%w: uid %d may not map %s: this server lets only root and uid %d map devices",
			access.ErrPermission, p.UID, dev.Name(), own)
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
