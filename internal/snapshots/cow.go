package snapshots

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/exstore/persistent"
	"github.com/daxsnap/daxsnap/internal/wire"
	"golang.org/x/sys/unix"
)

// COW sizing.
const (
	// DefaultChunkBytes is LVM's default snapshot chunk size.
	DefaultChunkBytes = 4096
	// MinDefaultCOW is the smallest COW file the daemon picks on its own.
	MinDefaultCOW = 8 << 20
)

// defaultCOWSize is 10% of the origin, at least MinDefaultCOW, at most
// what a full copy of the origin takes (more would never be used).
func defaultCOWSize(originBytes int64, chunk dm.Sector, store exstore.StoreType) int64 {
	return min(max(originBytes/10, MinDefaultCOW), fullCOWSize(originBytes, chunk, store))
}

// fullCOWSize is the COW size that holds a copy of every origin chunk
// (for a persistent store, with its header and metadata areas).
func fullCOWSize(originBytes int64, chunk dm.Sector, store exstore.StoreType) int64 {
	if store == exstore.Transient {
		cb := chunk.Bytes()
		return (originBytes + cb - 1) / cb * cb
	}
	return persistent.NewGeometry(chunk).FullSize(originBytes)
}

// minCOWChunks is the smallest COW that can hold one exception: one data
// chunk, and for a persistent store its header and first metadata area.
func minCOWChunks(store exstore.StoreType) int64 {
	if store == exstore.Transient {
		return 1
	}
	return persistent.MinDeviceChunks
}

// createCOW makes a zeroed COW file of size bytes, its blocks allocated
// up front (fallocate) so a snapshot does not fail later on a full file
// system; where fallocate is not supported the file is sparse.
func createCOW(path string, size int64) (sparse bool, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, err
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) {
		sparse, err = true, f.Truncate(size)
	}
	if err == nil {
		err = f.Sync()
	}
	err = errors.Join(err, f.Close())
	if err != nil {
		os.Remove(path)
		if errors.Is(err, unix.ENOSPC) {
			return false, fmt.Errorf("no room for %d bytes in %s: give a smaller --cow-size, or --cow FILE on another file system", size, filepath.Dir(path))
		}
		return false, err
	}
	return sparse, nil
}

// cowHead reads the first 16 bytes (the persistent header) of a COW given
// by path: a file, a block device or a daxsnap device.
func (mg *Manager) cowHead(path string) (head []byte, size int64, err error) {
	head = make([]byte, persistent.HeaderSize)
	if name, ok := strings.CutPrefix(path, dm.MapperPrefix); ok {
		dev, err := mg.devs.Get(name)
		if err != nil || !dev.Info().LiveTable {
			return nil, 0, fmt.Errorf("%s is not a daxsnap device with a live table", path)
		}
		_, err = dev.ReadAt(head, 0)
		return head, dev.Size(), err
	}
	b, err := backing.Open(path, backing.Options{ReadOnly: true})
	if err != nil {
		return nil, 0, err
	}
	defer b.Close()
	if b.Size() < int64(len(head)) {
		return nil, b.Size(), nil
	}
	_, err = b.ReadAt(head, 0)
	return head, b.Size(), err
}

// checkGivenCOW checks a COW the user named: it exists, is big enough for
// the chunk size, no table uses it, and its header is zero (a persistent
// store starts only on a zeroed header; one with the SnAp magic holds
// another snapshot).
func (mg *Manager) checkGivenCOW(op, path string, chunk dm.Sector, store exstore.StoreType) error {
	if !filepath.IsAbs(path) {
		return errorf(dm.ErrInvalidArgument, "%s: COW %s: give an absolute path (the daemon does not share your working directory)", op, path)
	}
	if mg.ownsCOW(path) {
		return errorf(dm.ErrInvalidArgument, "%s: COW %s is in %s, where the daemon keeps the COW files it creates: use --cow-size to have it make one, or put yours elsewhere", op, path, filepath.Dir(path))
	}
	if user := mg.tableUsing(path); user != "" {
		return errorf(dm.ErrBusy, "%s: COW %s is used by the table of %s: give a file no device uses", op, path, user)
	}
	head, size, err := mg.cowHead(path)
	if err != nil {
		return errorf(dm.ErrInvalidArgument, "%s: COW %s: %v: create the file first (e.g. `fallocate -l 64M %s`), or use --cow-size", op, path, err, path)
	}
	if need := minCOWChunks(store) * chunk.Bytes(); size < need {
		return errorf(dm.ErrNoSpace, "%s: COW %s is %d bytes, too small: a %s snapshot with %d-byte chunks needs at least %d bytes (header, metadata area and one data chunk); give a larger file",
			op, path, size, store.Describe(), chunk.Bytes(), need)
	}
	zero := fmt.Sprintf("zero its start if it is meant to be a new COW: `dd if=/dev/zero of=%s bs=%d count=1 conv=notrunc`", path, chunk.Bytes())
	if h, err := persistent.DecodeHeader(head); err == nil && h.Magic == persistent.Magic {
		return errorf(dm.ErrExists, "%s: COW %s already holds a snapshot (its header has the SnAp magic); using it would throw that snapshot away: %s", op, path, zero)
	}
	if store != exstore.Transient && !bytes.Equal(head, make([]byte, len(head))) {
		return errorf(dm.ErrInvalidArgument, "%s: COW %s does not start with zeroes, so it may hold data, and a persistent store starts only on a zeroed header: %s", op, path, zero)
	}
	return nil
}

// tableUsing names a device whose tables use the file or device at path
// (compared by identity), or "".
func (mg *Manager) tableUsing(path string) string {
	for _, dev := range mg.devs.List() {
		inactive, _ := dev.Table(dm.Inactive)
		if tablesName(path, mg.recordedLive(dev), inactive) {
			return dev.Name()
		}
	}
	return ""
}

// tablesName reports whether an argument of a line of tables names the
// file or device at path (compared by identity).
func tablesName(path string, tables ...string) bool {
	for _, text := range tables {
		lines, _ := dm.ParseTable(text)
		for _, l := range lines {
			for _, arg := range l.Args {
				if strings.HasPrefix(arg, "/") && sameFile(arg, path) {
					return true
				}
			}
		}
	}
	return false
}

// sameFile reports whether a and b name one file (or daxsnap device).
func sameFile(a, b string) bool {
	if a == b {
		return true
	}
	if strings.HasPrefix(a, dm.MapperPrefix) || strings.HasPrefix(b, dm.MapperPrefix) {
		return false
	}
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// removeOwnedCOW deletes a COW file the daemon created; others stay.
func (mg *Manager) removeOwnedCOW(path string) error {
	mg.forgetTracking(path)
	if !mg.ownsCOW(path) {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete COW file %s: %w: delete it by hand", path, err)
	}
	return nil
}

// tidyCOWDir settles the files in the COW directory that no table uses.
// The NAME.cow of a snapshot in leftovers (one an interrupted operation
// left behind: its creation was undone, or its removal or merge finished)
// is deleted. (A NAME.N.cow, made while a renamed snapshot kept NAME.cow,
// cannot be told from another snapshot's file: it is kept, as below.)
// Any other one may be the only copy of a snapshot, whose record the
// state file lost: it goes to lost+found, never away, and the log says
// how to bring it back (`daxsnap cow adopt`).
func (mg *Manager) tidyCOWDir(leftovers map[string]bool) {
	defer mg.reportLost()
	recs, err := mg.store.Devices()
	if err != nil {
		mg.log.Error("COW files not tidied: read the state file", "err", err)
		return
	}
	recorded := func(path string) bool { // a device that did not come back may still name it
		for _, r := range recs {
			if tablesName(path, r.Live, r.Inactive) {
				return true
			}
		}
		return false
	}
	for _, dir := range mg.cowDirs() {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			path := filepath.Join(dir, e.Name())
			if !e.Type().IsRegular() || mg.tableUsing(path) != "" || recorded(path) {
				continue
			}
			if name, ok := strings.CutSuffix(e.Name(), ".cow"); ok && leftovers[name] {
				if err := os.Remove(path); err != nil {
					mg.log.Error("delete unused COW file", "path", path, "err", err)
					continue
				}
				mg.log.Warn("deleted a COW file an interrupted snapshot operation left", "path", path)
				continue
			}
			to, err := mg.quarantine(path)
			if err != nil {
				mg.log.Error("a COW file no snapshot uses could not be moved to lost+found; it stays where it is", "path", path, "err", err)
				continue
			}
			mg.log.Warn("moved a COW file no snapshot uses to lost+found (the state file may have lost its snapshot): `daxsnap cow adopt FILE ORIGIN NAME` makes a snapshot of it again; delete it if it is not needed",
				"from", path, "to", to, "cow", describeHead(to))
		}
	}
}

// LostFoundDir is where the daemon puts COW files it cannot account for,
// in the state directory.
const LostFoundDir = "lost+found"

// lostDirs are the lost+found directories, one per COW directory.
func (mg *Manager) lostDirs() []string {
	var out []string
	for _, d := range mg.cowDirs() {
		out = append(out, mg.lostDirOf(d))
	}
	return out
}

// quarantine moves path, a file in a COW directory, into that
// directory's lost+found under a name no file there has.
func (mg *Manager) quarantine(path string) (string, error) {
	lost := mg.lostDirOf(filepath.Dir(path))
	if err := os.MkdirAll(lost, 0o700); err != nil {
		return "", err
	}
	base := filepath.Base(path)
	to := filepath.Join(lost, base)
	for i := 1; ; i++ {
		if _, err := os.Lstat(to); errors.Is(err, os.ErrNotExist) {
			break
		}
		to = filepath.Join(lost, fmt.Sprintf("%s.%d", base, i))
	}
	return to, os.Rename(path, to)
}

// reportLost says at every start what lost+found holds, until it is empty.
func (mg *Manager) reportLost() {
	for _, path := range mg.LostCOWs() {
		mg.log.Warn("lost+found holds a COW file no snapshot uses: `daxsnap cow adopt "+path+" ORIGIN NAME` makes a snapshot of ORIGIN from it again; delete it if it is not needed",
			"path", path, "cow", describeHead(path))
	}
}

// LostCOWs lists the files in the lost+found directories.
func (mg *Manager) LostCOWs() []string {
	var out []string
	for _, lost := range mg.lostDirs() {
		entries, _ := os.ReadDir(lost)
		for _, e := range entries {
			out = append(out, filepath.Join(lost, e.Name()))
		}
	}
	return out
}

// describeHead says what a COW file's header holds, for the log.
func describeHead(path string) string {
	r, err := InspectCOW(path)
	switch {
	case r == nil:
		return fmt.Sprintf("unreadable: %v", err)
	case r.Header.Magic != persistent.Magic:
		return "no snapshot header (a transient store, or never used): nothing to adopt"
	case r.Header.Valid == 0:
		return "an invalidated snapshot: nothing to adopt"
	}
	return fmt.Sprintf("a persistent snapshot, chunk %d bytes, %d exceptions", r.ChunkSize.Bytes(), len(r.Exceptions))
}

// checkAdoptedCOW checks a COW to adopt: an absolute path no table uses,
// holding a valid persistent store whose chunk size the table takes.
func (mg *Manager) checkAdoptedCOW(p *createPlan, chunkBytes int64) error {
	op, path := p.op, p.cow
	if !filepath.IsAbs(path) {
		return errorf(dm.ErrInvalidArgument, "%s: COW %s: give an absolute path (the daemon does not share your working directory)", op, path)
	}
	if user := mg.tableUsing(path); user != "" {
		return errorf(dm.ErrBusy, "%s: COW %s is used by the table of %s: it is not lost", op, path, user)
	}
	head, _, err := mg.cowHead(path)
	var h persistent.Header
	if err == nil {
		h, err = persistent.DecodeHeader(head)
	}
	if err != nil {
		return errorf(dm.ErrInvalidArgument, "%s: COW %s: %v: give the file that holds the snapshot", op, path, err)
	}
	chunk := dm.Sector(h.ChunkSize)
	switch {
	case h.Magic != persistent.Magic:
		return errorf(dm.ErrInvalidArgument, "%s: COW %s has no snapshot header (magic %#08x, not %#08x \"SnAp\"): it holds no persistent snapshot to adopt (`daxsnap cow inspect %s` shows what it holds)", op, path, h.Magic, uint32(persistent.Magic), path)
	case h.Valid == 0:
		return errorf(dm.ErrInvalidArgument, "%s: COW %s holds a snapshot that was invalidated (it overflowed or hit an I/O error): its contents cannot be recovered", op, path)
	case h.Version != persistent.DiskVersion:
		return errorf(dm.ErrInvalidArgument, "%s: COW %s: header version %d; only version %d exists", op, path, h.Version, persistent.DiskVersion)
	}
	if _, err := checkChunk(op, chunk.Bytes(), dm.SectorSize); err != nil || chunk == 0 {
		return errorf(dm.ErrInvalidArgument, "%s: COW %s: its header's chunk size %d sectors is not valid: the header is damaged (`daxsnap cow inspect %s`)", op, path, chunk, path)
	}
	if chunkBytes != 0 && chunkBytes != chunk.Bytes() {
		return errorf(dm.ErrInvalidArgument, "%s: COW %s has %d-byte chunks, not %d: leave the chunk size out, the header's is used", op, path, chunk.Bytes(), chunkBytes)
	}
	p.chunk = chunk
	p.note = fmt.Sprintf("Adopted COW %s (%d-byte chunks). It shows %s as it was when the COW was last in use only if %s has not been written since without it: chunks written since read as they are now.",
		path, chunk.Bytes(), p.l.origin, p.l.origin)
	return nil
}

// claimCOW makes an adopted COW in lost+found or the COW directory the
// daemon's again: it becomes <state>/cow/NAME.cow, deleted with the
// snapshot. giveBack moves it back if the adoption fails.
func (mg *Manager) claimCOW(p *createPlan) (giveBack func(), err error) {
	from := p.cow
	dir := filepath.Dir(from)
	home := ""
	for _, d := range mg.cowDirs() {
		if sameFile(dir, mg.lostDirOf(d)) || sameFile(dir, d) {
			home = d
		}
	}
	if home == "" {
		return func() {}, nil // the user's own file, used in place
	}
	to, err := filepath.Abs(filepath.Join(home, p.name+".cow"))
	if err != nil {
		return nil, err
	}
	if sameFile(from, to) {
		return func() {}, nil
	}
	if _, err := os.Lstat(to); err == nil {
		return nil, errorf(dm.ErrExists, "%s: %s exists: pick another snapshot name", p.op, to)
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	if err := os.Rename(from, to); err != nil {
		return nil, fmt.Errorf("%s: move %s to %s: %w", p.op, from, to, err)
	}
	p.cow = to
	p.note += fmt.Sprintf(" It is now %s, deleted with the snapshot.", to)
	return func() {
		if err := os.Rename(to, from); err != nil {
			mg.log.Error("adoption failed and the COW could not be moved back", "cow", to, "to", from, "err", err)
		}
	}, nil
}

// InspectCOW reads a COW device offline, without a daemon, and reports
// its header, metadata areas and exceptions (daxsnap cow inspect). On a
// damaged device the report goes as far as it got, with the error.
func InspectCOW(path string) (*persistent.Report, error) {
	dev, err := backing.Open(path, backing.Options{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("cow inspect: %w", err)
	}
	defer dev.Close()
	return persistent.Inspect(dev)
}

// COWReportWire converts an inspection report to its JSON form.
func COWReportWire(r *persistent.Report) wire.COWReport {
	out := wire.COWReport{Path: r.Path, DeviceBytes: r.DeviceBytes, LogicalBlockSize: r.LogicalBlockSize,
		Fresh: r.Fresh, Magic: r.Header.Magic, Valid: r.Header.Valid, Version: r.Header.Version,
		HeaderChunkSize: r.Header.ChunkSize, ChunkSize: uint64(r.ChunkSize), ExceptionsPerArea: r.ExceptionsPerArea,
		DeviceChunks: uint64(r.DeviceChunks), NextFree: uint64(r.NextFree), Allocated: uint64(r.Allocated),
		Total: uint64(r.Total), Metadata: uint64(r.Metadata), Notes: r.Notes, Problem: r.Problem,
		Areas: []wire.COWArea{}, Exceptions: []wire.COWException{}}
	for _, a := range r.Areas {
		out.Areas = append(out.Areas, wire.COWArea{Index: a.Index, Chunk: uint64(a.Chunk), Records: a.Records, Full: a.Full, DirtyTail: a.DirtyTail})
	}
	for _, e := range r.Exceptions {
		out.Exceptions = append(out.Exceptions, wire.COWException{Old: uint64(e.Old), New: uint64(e.New)})
	}
	return out
}

// checkChunk validates a chunk size in bytes as the kernel does and
// returns it in sectors.
func checkChunk(op string, bytes int64, lbs ...int) (dm.Sector, error) {
	if bytes == 0 {
		bytes = DefaultChunkBytes
	}
	if bytes < 0 || bytes%dm.SectorSize != 0 {
		return 0, errorf(dm.ErrInvalidArgument, "%s: chunk size %d bytes is not a multiple of %d: use a power of two from 4k (LVM's range is 4k to 512k)", op, bytes, dm.SectorSize)
	}
	chunk := dm.Sector(bytes / dm.SectorSize)
	if err := exstore.ValidateChunkSize(exstore.Sector(chunk), lbs...); err != nil {
		return 0, errorf(dm.ErrInvalidArgument, "%s: chunk size %d bytes: %v", op, bytes, err)
	}
	return chunk, nil
}
