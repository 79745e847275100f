package daemon

import (
	"fmt"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/export/fusefs"
)

// startFUSE mounts the FUSE export (every device a file) on
// Config.FUSEDir. It never fails the start: on a machine without
// /dev/fuse, or a user who may not mount, the daemon warns and serves
// without it.
func (d *Daemon) startFUSE() {
	if d.cfg.FUSEDir == "" {
		return
	}
	srv, err := fusefs.Mount(d.cfg.FUSEDir, d.mgr, fusefs.Options{
		Open:   d.openFUSE,
		Owner:  d.fuseOwner,
		Logger: d.log.With("component", "fuse"),
	})
	if err != nil {
		d.log.Warn("FUSE export off: devices are not files on this run (NBD and the API serve them as usual); --fuse \"\" silences this",
			"dir", d.cfg.FUSEDir, "err", err)
		return
	}
	d.fuse = srv
}

// openFUSE opens dev for one open FUSE file; it counts in the device's
// open count until the kernel releases the file.
func (d *Daemon) openFUSE(dev *dm.Device) (fusefs.Backend, func(), error) {
	if err := dev.Open(); err != nil {
		return nil, nil, err
	}
	return d.metrics.wrap(dev.Name(), dev), func() { d.closeDevice(dev) }, nil
}

// fuseOwner gives a device file the device's owner, as /dev/mapper/NAME
// has (daxsnap create --uid --gid --mode).
func (d *Daemon) fuseOwner(dev *dm.Device) fusefs.Owner {
	o := d.owners.get(dev)
	return fusefs.Owner{UID: o.UID, GID: o.GID, Mode: o.Mode}
}

// stopFUSE unmounts the export. Files still open (a loop device left
// attached) make it force the unmount, which their users see as I/O
// errors, and report that.
func (d *Daemon) stopFUSE() error {
	if d.fuse == nil {
		return nil
	}
	if err := d.fuse.Close(); err != nil {
		return fmt.Errorf("stop FUSE export: %w: detach loop devices (losetup -d) before stopping the daemon", err)
	}
	return nil
}

// FUSEDir is where the FUSE export is mounted ("" if it is not).
func (d *Daemon) FUSEDir() string {
	if d.fuse == nil {
		return ""
	}
	return d.fuse.Dir()
}
