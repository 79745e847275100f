package daemon

import (
	"fmt"
	"path/filepath"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/export/fusefs"
)

// startFUSE mounts the FUSE export (every device a file) on
// Config.FUSEDir. It never fails the start: on a machine without
// /dev/fuse, or a user who may not mount, the daemon warns and serves
// without it.
func (e *exports) startFUSE() {
	if e.cfg.FUSEDir == "" {
		return
	}
	e.fuseFiles = resolvedPath(e.cfg.FUSEDir)
	srv, err := fusefs.Mount(e.cfg.FUSEDir, e.mgr, fusefs.Options{
		Open:   e.openFUSE,
		Owner:  e.fuseOwner,
		Logger: e.log.With("component", "fuse"),
	})
	if err != nil {
		e.log.Warn("FUSE export off: devices are not files on this run (NBD and the API serve them as usual); --fuse \"\" silences this",
			"dir", e.cfg.FUSEDir, "err", err)
		return
	}
	e.fuse = srv
	e.metrics.reg.MustRegister(fuseCollector{srv.Stats()})
}

// openFUSE opens dev for one open FUSE file; it counts in the device's
// open count, as a FUSE holder, until the kernel releases the file. A
// stopping daemon opens nothing new. ORIGIN-real and ORIGIN-merge files
// refuse writes (EROFS), even root's, as their NBD exports do: a write
// there changes an origin under its snapshots.
func (e *exports) openFUSE(dev *dm.Device) (fusefs.Backend, func(), error) {
	if err := e.host.refuseWhileStopping("open FUSE file " + dev.Name()); err != nil {
		return nil, nil, err
	}
	release, err := e.host.hold(dev, dm.Holder{Kind: dm.HolderFUSE, Who: filepath.Join(e.fuseFiles, dev.Name())})
	if err != nil {
		return nil, nil, err
	}
	var be fusefs.Backend = e.metrics.wrap(dev.Name(), dev)
	if e.auth.bypassesCOW(dev.Name()) {
		be = readOnlyFile{be, dev.Name()}
	}
	f := e.devs.openFUSE(dev, be, func() { release() })
	return f, f.close, nil
}

// readOnlyFile is a device file whose writes are refused.
type readOnlyFile struct {
	fusefs.Backend
	name string
}

func (f readOnlyFile) WriteAt([]byte, int64) (int, error) { return 0, f.refuse() }
func (f readOnlyFile) WriteZeroes(int64, int64) error     { return f.refuse() }

// LendRead passes loans for reads on (dm.Lender).
func (f readOnlyFile) LendRead(off, n int64) ([]byte, func(), bool) {
	return dm.LendFrom(f.Backend, off, n)
}

func (f readOnlyFile) refuse() error {
	return fmt.Errorf("%w: %s bypasses its origin's snapshots; write to the origin", dm.ErrReadOnly, f.name)
}

// resolvedPath is dir as the kernel names it (absolute, no symbolic
// links in its parents), as /sys/block/loopN/loop/backing_file shows
// files in it.
func resolvedPath(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return dir
	}
	if parent, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		return filepath.Join(parent, filepath.Base(abs))
	}
	return abs
}

// fuseOwner gives a device file the device's owner, as /dev/mapper/NAME
// has (daxsnap create --uid --gid --mode), less the write bits for
// ORIGIN-real and ORIGIN-merge.
func (e *exports) fuseOwner(dev *dm.Device) fusefs.Owner {
	o := e.devs.owner(dev)
	if e.auth.bypassesCOW(dev.Name()) {
		o.Mode &^= 0o222
	}
	return fusefs.Owner{UID: o.UID, GID: o.GID, Mode: o.Mode}
}

// stopFUSE unmounts the export. Files still open (a loop device left
// attached) make it force the unmount, which their users see as I/O
// errors, and report that.
func (e *exports) stopFUSE() error {
	if e == nil || e.fuse == nil {
		return nil
	}
	if err := e.fuse.Close(); err != nil {
		return fmt.Errorf("stop FUSE export: %w: detach loop devices (losetup -d) before stopping the daemon", err)
	}
	return nil
}

// fuseDir is where the FUSE export is mounted ("" if it is not).
func (e *exports) fuseDir() string {
	if e == nil || e.fuse == nil {
		return ""
	}
	return e.fuse.Dir()
}
