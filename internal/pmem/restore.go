package pmem

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Restore, at start, finishes interrupted region operations and checks that
// every region's file is still there.
func (m *Manager) Restore() error {
	recs, err := m.store.Regions()
	if err != nil {
		return err
	}
	for _, rec := range recs {
		switch rec.Op.Verb {
		case "create", "remove":
			// Neither finished: the caller never heard of success. Undo,
			// in a directory that is the daemon's own only.
			var err error
			if derr := checkRegionDir(filepath.Dir(rec.Path)); derr != nil && !errors.Is(derr, os.ErrNotExist) {
				m.log.Error("interrupted pmem operation: its file is left alone", "region", rec.Name, "path", rec.Path, "err", derr)
			} else {
				err = os.Remove(rec.Path)
			}
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("finish interrupted pmem %s of %s: %w", rec.Op, rec.Name, err)
			}
			if err := m.store.DeleteRegion(rec.Name); err != nil {
				return err
			}
			m.log.Warn("pmem operation was interrupted by the last stop; region dropped", "region", rec.Name, "op", rec.Op)
			continue
		}
		if err := CheckFile(rec); errors.Is(err, os.ErrNotExist) {
			m.log.Warn("pmem region file is missing; tables naming it will serve errors", "region", rec.Name, "path", rec.Path, "err", err)
		} else if err != nil {
			m.log.Error("pmem region file refused; tables naming it will serve errors", "region", rec.Name, "path", rec.Path, "err", err)
		} else if rec.Ino == 0 && identify(&rec) == nil {
			// A record from before daxsnap kept the file's identity.
			if err := m.store.PutRegion(rec); err != nil {
				m.log.Error("record region file identity", "region", rec.Name, "err", err)
			}
		}
	}
	return nil
}
