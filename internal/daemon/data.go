package daemon

import (
	"errors"
	"fmt"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// ReadData reads n bytes at off from a device's live table.
func (d *Daemon) ReadData(name string, off, n int64) ([]byte, error) {
	var p []byte
	err := d.withOpen("read", name, func(b *metered) error {
		p = make([]byte, n)
		_, err := b.ReadAt(p, off)
		return err
	})
	return p, err
}

// WriteData writes p at off and flushes.
func (d *Daemon) WriteData(name string, off int64, p []byte) error {
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
