package pmem

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/daxsnap/daxsnap/internal/state"
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

// Missing lists the regions among paths (as tables name them) whose file
// is gone, as after a reboot: their memory is lost. A file that is there
// but refused (replaced, wrong owner) is not missing: the daemon leaves
// it alone.
func (m *Manager) Missing(paths []string) []state.Region {
	var out []state.Region
	for _, p := range paths {
		rec, ok := m.regionAt(p)
		if !ok {
			continue
		}
		if err := CheckFile(rec); errors.Is(err, os.ErrNotExist) {
			out = append(out, rec)
		}
	}
	return out
}

// Recreate makes a fresh, zeroed file for region name, whose file is
// missing (a reboot emptied its file system), at the path and size it
// had, and records the new file's identity. The caller fills it (from a
// checkpoint) before anything maps it.
func (m *Manager) Recreate(name string, sparse bool) (state.Region, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	op := "restore region " + name
	rec, err := m.region(op, name)
	if err != nil {
		return rec, err
	}
	if _, err := os.Lstat(rec.Path); !errors.Is(err, os.ErrNotExist) {
		return rec, fmt.Errorf("%s: %s is there (%v): only a missing region file is made again", op, rec.Path, err)
	}
	if _, err := ensureRegionDir(op, filepath.Dir(filepath.Dir(rec.Path))); err != nil {
		return rec, err
	}
	if err := createRegionFile(rec.Path, rec.Size, !sparse); err != nil {
		return rec, fmt.Errorf("%s: %w", op, err)
	}
	if err := identify(&rec); err != nil {
		os.Remove(rec.Path)
		return rec, fmt.Errorf("%s: %w", op, err)
	}
	if err := m.store.PutRegion(rec); err != nil {
		os.Remove(rec.Path)
		return rec, fmt.Errorf("%s: %w", op, err)
	}
	m.log.Info("pmem region made again for a restore: its file was gone", "region", name, "path", rec.Path, "size", rec.Size)
	return rec, nil
}
