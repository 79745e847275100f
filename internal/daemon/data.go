package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// ReadData reads n bytes at off from a device's live table.
func (d deviceService) ReadData(ctx context.Context, name string, off, n int64) ([]byte, error) {
	if err := api.CheckData("read", name, off, n); err != nil {
		return nil, err
	}
	var p []byte
	err := d.withOpen("read", name, func(b *metered) error {
		p = make([]byte, n)
		_, err := b.ReadAt(p, off)
		return err
	})
	return p, err
}

// WriteData writes p at off and flushes.
func (d deviceService) WriteData(ctx context.Context, name string, off int64, p []byte) error {
	if err := api.CheckData("write", name, off, int64(len(p))); err != nil {
		return err
	}
	return d.withOpen("write", name, func(b *metered) error {
		if _, err := b.WriteAt(p, off); err != nil {
			return err
		}
		return b.Flush()
	})
}

// withOpen holds a device open (it counts in dmsetup info) for one I/O
// through the metered path the exports use.
func (d *Daemon) withOpen(op, name string, fn func(*metered) error) error {
	dev, err := d.device(op, name)
	if err != nil {
		return err
	}
	release, err := d.hold(dev, dm.Holder{Kind: dm.HolderIO, Who: op})
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, name, err)
	}
	err = fn(d.metrics.wrap(name, dev))
	if cerr := release(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, name, err)
	}
	return nil
}

// AuthorizeRead is the control API's rule for reading a device's data
// (GET /v1/devices/NAME/data): the rule of every other door to a
// device's data (mayAccess), by the device's owner and mode.
func (d deviceService) AuthorizeRead(name string, p api.Peer) error {
	dev, err := d.device("read", name)
	if err != nil {
		return err
	}
	peer := access.Peer{PID: p.PID, UID: uint32(p.UID), GID: uint32(p.GID)}
	// Unreadable groups (the process is gone): only the primary gid counts.
	peer.Groups, _ = access.Groups(p.PID, peer.UID)
	// A refusal wraps access.ErrPermission: 403 permission_denied, as every door answers it.
	return mayAccess(d.devs.owner(dev), uint32(os.Geteuid()), peer,
		fmt.Sprintf("uid %d (gid %d, pid %d)", p.UID, p.GID, p.PID), "read the data of", name, access.Read,
		fmt.Sprintf("recreate the device with --uid/--gid/--mode that allow it (daxsnap create %s --uid %d ...), or ask root to read it", name, p.UID))
}
