package daemon

import (
	"bytes"
	"encoding/binary"
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
	// snapMagic is the persistent store's header magic, "SnAp" little-endian.
	snapMagic = 0x70416e53
)

// defaultCOWSize is 10% of the origin, at least MinDefaultCOW, at most
// what a full copy of the origin takes (more would never be used).
func defaultCOWSize(originBytes int64, chunk dm.Sector, store string) int64 {
	return min(max(originBytes/10, MinDefaultCOW), fullCOWSize(originBytes, chunk, store))
}

// fullCOWSize is the COW size that holds a copy of every origin chunk:
// for a persistent store, the header, the data chunks and their metadata
// areas (the area after a full one is zeroed before use, so one more).
func fullCOWSize(originBytes int64, chunk dm.Sector, store string) int64 {
	cb := chunk.Bytes()
	data := (originBytes + cb - 1) / cb
	if store == "N" {
		return data * cb
	}
	epa := cb / 16
	return (1 + data/epa + 1 + data) * cb
}

// minCOWChunks is the smallest COW that can hold one exception: header,
// first metadata area and one data chunk for a persistent store.
func minCOWChunks(store string) int64 {
	if store == "N" {
		return 1
	}
	return 3
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
func (d *Daemon) cowHead(path string) (head []byte, size int64, err error) {
	head = make([]byte, 16)
	if name, ok := strings.CutPrefix(path, MapperPrefix); ok {
		dev, err := d.mgr.Get(name)
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
func (d *Daemon) checkGivenCOW(op, path string, chunk dm.Sector, store string) error {
	if !filepath.IsAbs(path) {
		return errorf(dm.ErrInvalidArgument, "%s: COW %s: give an absolute path (the daemon does not share your working directory)", op, path)
	}
	if d.ownsCOW(path) {
		return errorf(dm.ErrInvalidArgument, "%s: COW %s is in %s, where the daemon keeps the COW files it creates: use --cow-size to have it make one, or put yours elsewhere", op, path, d.cowDir())
	}
	if user := d.tableUsing(path); user != "" {
		return errorf(dm.ErrBusy, "%s: COW %s is used by the table of %s: give a file no device uses", op, path, user)
	}
	head, size, err := d.cowHead(path)
	if err != nil {
		return errorf(dm.ErrInvalidArgument, "%s: COW %s: %v: create the file first (e.g. `fallocate -l 64M %s`), or use --cow-size", op, path, err, path)
	}
	if need := minCOWChunks(store) * chunk.Bytes(); size < need {
		return errorf(dm.ErrNoSpace, "%s: COW %s is %d bytes, too small: a %s snapshot with %d-byte chunks needs at least %d bytes (header, metadata area and one data chunk); give a larger file",
			op, path, size, storeName(store), chunk.Bytes(), need)
	}
	zero := fmt.Sprintf("zero its start if it is meant to be a new COW: `dd if=/dev/zero of=%s bs=%d count=1 conv=notrunc`", path, chunk.Bytes())
	if binary.LittleEndian.Uint32(head) == snapMagic {
		return errorf(dm.ErrExists, "%s: COW %s already holds a snapshot (its header has the SnAp magic); using it would throw that snapshot away: %s", op, path, zero)
	}
	if store != "N" && !bytes.Equal(head, make([]byte, len(head))) {
		return errorf(dm.ErrInvalidArgument, "%s: COW %s does not start with zeroes, so it may hold data, and a persistent store starts only on a zeroed header: %s", op, path, zero)
	}
	return nil
}

func storeName(store string) string {
	if store == "N" {
		return "transient (N)"
	}
	return "persistent (P)"
}

// tableUsing names a device whose tables use the file or device at path
// (compared by identity), or "".
func (d *Daemon) tableUsing(path string) string {
	for _, dev := range d.mgr.List() {
		text := d.recordedLive(dev)
		t, _ := dev.Table(true)
		for _, f := range strings.Fields(text + " " + t) {
			if strings.HasPrefix(f, "/") && sameFile(f, path) {
				return dev.Name()
			}
		}
	}
	return ""
}

// sameFile reports whether a and b name one file (or daxsnap device).
func sameFile(a, b string) bool {
	if a == b {
		return true
	}
	if strings.HasPrefix(a, MapperPrefix) || strings.HasPrefix(b, MapperPrefix) {
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
func (d *Daemon) removeOwnedCOW(path string) error {
	if !d.ownsCOW(path) {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete COW file %s: %w: delete it by hand", path, err)
	}
	return nil
}

// tidyCOWDir deletes files in the COW directory that no table uses: COW
// files of snapshot creations or removals a stop interrupted.
func (d *Daemon) tidyCOWDir() {
	entries, err := os.ReadDir(d.cowDir())
	if err != nil {
		return
	}
	recs, err := d.store.Devices()
	if err != nil {
		d.log.Error("COW files not tidied: read the state file", "err", err)
		return
	}
	recorded := func(path string) bool { // a device that did not come back may still name it
		for _, r := range recs {
			for _, f := range strings.Fields(r.Live + " " + r.Inactive) {
				if strings.HasPrefix(f, "/") && sameFile(f, path) {
					return true
				}
			}
		}
		return false
	}
	for _, e := range entries {
		path := filepath.Join(d.cowDir(), e.Name())
		if !e.Type().IsRegular() || d.tableUsing(path) != "" || recorded(path) {
			continue
		}
		if err := os.Remove(path); err != nil {
			d.log.Error("delete unused COW file", "path", path, "err", err)
			continue
		}
		d.log.Warn("deleted a COW file no snapshot uses (left by an interrupted snapshot operation)", "path", path)
	}
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
