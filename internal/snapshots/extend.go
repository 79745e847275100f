package snapshots

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
	"golang.org/x/sys/unix"
)

// SnapshotExtend grows a snapshot's COW file, as lvextend does for a
// snapshot: the file grows (allocated where the file system can), and the
// snapshot, suspended and resumed, takes the new chunks in.
func (mg *Manager) SnapshotExtend(name string, req wire.SnapshotExtend) (wire.Snapshot, error) {
	unlock := mg.host.Lock(name)
	defer unlock()
	s, err := mg.findSnapshot("snapshot extend", name)
	if err != nil {
		return wire.Snapshot{}, err
	}
	size, err := mg.extendedSize(s, req)
	if err != nil {
		return wire.Snapshot{}, err
	}
	if err := mg.extendCOW("snapshot extend", s, size); err != nil {
		return wire.Snapshot{}, err
	}
	return mg.describe(s), nil
}

// extendedSize is the COW size req asks for, checked against what the
// snapshot can be extended by at all.
func (mg *Manager) extendedSize(s snapView, req wire.SnapshotExtend) (int64, error) {
	op := "snapshot extend " + s.name
	cur, err := mg.extendableCOW(op, s)
	if err != nil {
		return 0, err
	}
	var size int64
	switch {
	case (req.Add > 0) == (req.Size > 0) || req.Add < 0 || req.Size < 0:
		return 0, errorf(dm.ErrInvalidArgument, "%s: give the size to add (--size +N) or the new size (--size N), one positive number", op)
	case req.Add > 0:
		size = cur + req.Add
	default:
		size = req.Size
	}
	full := fullCOWSize(int64(s.line.size.Bytes()), s.line.Chunk, s.line.Store)
	if cur >= full {
		return 0, errorf(dm.ErrInvalidArgument, "%s: its COW (%d bytes) already holds a full copy of the origin (%d bytes): it cannot fill up", op, cur, full)
	}
	if size <= cur {
		return 0, errorf(dm.ErrInvalidArgument, "%s: the COW is %d bytes already; a snapshot never shrinks: give a larger size", op, cur)
	}
	cb := s.line.Chunk.Bytes()
	return min((size+cb-1)/cb*cb, full), nil
}

// extendableCOW returns the size of s's COW, or why it cannot grow.
func (mg *Manager) extendableCOW(op string, s snapView) (int64, error) {
	if s.degraded {
		return 0, errorf(dm.ErrInvalidArgument, "%s: the snapshot serves an `error` table (%s): nothing to extend", op, mg.host.Note(s.name).Text)
	}
	switch u := usageOf(s.dev); u.state {
	case wire.SnapshotActive:
	case wire.SnapshotInvalid:
		return 0, errorf(dm.ErrInvalidArgument, "%s: the snapshot is invalid (its COW filled up or failed): its contents are lost; remove it", op)
	default:
		return 0, errorf(dm.ErrInvalidArgument, "%s: the snapshot is %s, not active: only an active snapshot is extended", op, u.state)
	}
	if m, ok := mg.mergeOf(s.layout()); ok && s.origin != "" && sameFile(m.line.COW, s.line.COW) {
		return 0, errorf(dm.ErrBusy, "%s: it is merging into %s: a merge only frees COW space", op, s.origin)
	}
	if name, ok := strings.CutPrefix(s.line.COW, dm.MapperPrefix); ok {
		return 0, errorf(dm.ErrInvalidArgument, "%s: its COW is the device %s: load a larger table into %s and resume it; the snapshot takes the space in at its next allocation", op, s.line.COW, name)
	}
	b, err := backing.Open(s.line.COW, backing.Options{ReadOnly: true})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	defer b.Close()
	switch b.Kind() {
	case backing.KindFile, backing.KindTmpfs, backing.KindHugetlbfs, backing.KindFSDAX:
		// A memory file grows into the room its mapping was opened
		// with (a full copy of the origin), taken in on resume.
		return b.Size(), nil
	case backing.KindBlock:
		return 0, errorf(dm.ErrInvalidArgument, "%s: its COW is the block device %s: grow it (lvextend, losetup -c); the snapshot takes the space in at its next allocation", op, s.line.COW)
	}
	return 0, errorf(dm.ErrNotSupported, "%s: its COW %s is a %s, memory of a fixed size that cannot grow: give the snapshot a COW file (--cow FILE) to be able to extend it",
		op, s.line.COW, b.Kind())
}

// extendCOW grows s's COW file to size bytes and suspends and resumes the
// snapshot, which reads its COW's size again on resume.
func (mg *Manager) extendCOW(op string, s snapView, size int64) error {
	if err := growFile(s.line.COW, size); err != nil {
		return fmt.Errorf("%s: grow COW %s to %d bytes: %w", op, s.line.COW, size, err)
	}
	if s.dev.Info().Suspended {
		return nil // it takes the space in when resumed
	}
	if err := s.dev.Suspend(dm.SuspendOptions{}); err != nil {
		return fmt.Errorf("%s: suspend %s: %w; the COW grew, the snapshot takes it in at its next allocation", op, s.name, err)
	}
	if err := s.dev.Resume(); err != nil {
		return fmt.Errorf("%s: resume %s: %w", op, s.name, err)
	}
	mg.log.Info("snapshot extended", "snapshot", s.name, "cow", s.line.COW, "size", size)
	return nil
}

// growFile grows the file at path to size bytes (on hugetlbfs, whole
// huge pages), allocating the new blocks or pages where the file system
// can (as createCOW does).
func growFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err == nil {
		size, err = fileGrain(f, size)
	}
	if err == nil && fi.Size() < size {
		err = unix.Fallocate(int(f.Fd()), 0, fi.Size(), size-fi.Size())
		if errors.Is(err, unix.EOPNOTSUPP) {
			err = f.Truncate(size)
		}
		if err == nil {
			err = f.Sync()
		}
	}
	err = errors.Join(err, f.Close())
	if errors.Is(err, unix.ENOSPC) {
		return fmt.Errorf("%w: no room on its file system: free space there, or extend by less", err)
	}
	return err
}

// fileGrain rounds size up to what f's file system sizes files in: whole
// huge pages on hugetlbfs (which refuses other sizes), bytes elsewhere.
func fileGrain(f *os.File, size int64) (int64, error) {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		return 0, err
	}
	if sfs.Type != unix.HUGETLBFS_MAGIC || sfs.Bsize <= 0 {
		return size, nil
	}
	page := int64(sfs.Bsize)
	return (size + page - 1) / page * page, nil
}
