package daemon

import "github.com/daxsnap/daxsnap/internal/dm"

// LendsFUSE reports whether a read of [off, off+n) of device name's FUSE
// file is answered from lent memory, through the daemon's wrappers of the
// device (dm.Lender), as a file opened now would read it.
func LendsFUSE(d *Daemon, name string, off, n int64) (bool, error) {
	dev, err := d.mgr.Get(name)
	if err != nil {
		return false, err
	}
	be, release, err := d.exports.openFUSE(dev)
	if err != nil {
		return false, err
	}
	defer release()
	_, back, ok := dm.LendFrom(be, off, n)
	if ok {
		back()
	}
	return ok, nil
}
