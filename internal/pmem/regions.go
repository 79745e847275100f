// Package pmem manages memory regions (daxsnap pmem create/list/remove):
// files reserved on tmpfs or hugetlbfs that tables map as DAX memory,
// each with an owner and mode that decide who may map it, kept in the
// daemon's state file and in a directory only the daemon's uid writes
// (dir.go). The daemon reaches it through Manager and hands it what it
// needs of itself through Host.
package pmem

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

const (
	// DefaultDir is where memory regions go unless told otherwise.
	DefaultDir = "/dev/shm"
	// DefaultHugetlbDir is where huge-page regions go unless told otherwise.
	DefaultHugetlbDir = "/dev/hugepages"
)

// errorf words a message in one of dm's error classes (dm.ErrNotFound...),
// so that the API maps it to the right code.
var errorf = dm.Errorf

// Host is the daemon as the region manager sees it.
type Host interface {
	// Tables is the tables of every device, in the order of the device
	// list: live, inactive, and any kept while serving `error`.
	Tables() []Tables
	// RefuseWhileStopping says why nothing new may be made now (the
	// daemon is stopping), or nil.
	RefuseWhileStopping(op string) error
}

// Tables is the tables of one device, each as its text.
type Tables struct {
	Device string
	Tables []string
}

// Config is what a Manager works with.
type Config struct {
	Store *state.Store // the region records
	Log   *slog.Logger
	Dir   string // where regions go unless a request says; default DefaultDir
	Host  Host
}

// Manager makes, lists and removes regions.
type Manager struct {
	store *state.Store
	log   *slog.Logger
	dir   string
	host  Host
	mu    sync.RWMutex // region create/remove (write) vs table loads (read)
}

// New is a Manager of the regions recorded in cfg.Store.
func New(cfg Config) *Manager {
	if cfg.Dir == "" {
		cfg.Dir = DefaultDir
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Manager{store: cfg.Store, log: cfg.Log, dir: cfg.Dir, host: cfg.Host}
}

// LockTables keeps regions from being made or removed until unlock: a
// table load that may name a region holds it.
func (m *Manager) LockTables() (unlock func()) {
	m.mu.RLock()
	return m.mu.RUnlock
}

// Subdir is the directory regions go in, inside the memory file system.
const Subdir = "daxsnap"

// Create makes a memory region: a file reserved on tmpfs or hugetlbfs.
func (m *Manager) Create(req wire.PmemCreate) (wire.Pmem, error) {
	op := "pmem create " + req.Name
	if err := checkRegionName(op, req.Name); err != nil {
		return wire.Pmem{}, err
	}
	if err := m.host.RefuseWhileStopping(op); err != nil {
		return wire.Pmem{}, err
	}
	owner, err := ParseOwner(op, req.UID, req.GID, req.Mode)
	if err != nil {
		return wire.Pmem{}, err
	}
	dir := m.regionDir(req)
	fs, err := m.checkRegion(op, dir, req)
	if err != nil {
		return wire.Pmem{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if rec, ok, err := m.store.Region(req.Name); err != nil {
		return wire.Pmem{}, err
	} else if ok {
		return wire.Pmem{}, errorf(dm.ErrExists, "%s: a region with that name exists at %s: pick another name, or `daxsnap pmem remove %s` first", op, rec.Path, req.Name)
	}
	sub, err := ensureRegionDir(op, dir)
	if err != nil {
		return wire.Pmem{}, err
	}
	rec := state.Region{Name: req.Name, Path: filepath.Join(sub, req.Name), Size: req.Size, Hugetlb: fs.name == "hugetlbfs", Owner: RecordOwner(owner)}
	if _, err := os.Lstat(rec.Path); err == nil {
		return wire.Pmem{}, errorf(dm.ErrExists, "%s: %s exists but is not a region of this daemon: pick another name, or delete the file if nothing uses it", op, rec.Path)
	}
	err = m.store.RegionTransition(req.Name, state.Op{Verb: "create"}, rec, func() error { return createRegionFile(rec.Path, rec.Size, true) },
		func() *state.Region { return created(rec) })
	if err != nil {
		m.removeRegionDir(sub)
	}
	if err != nil {
		return wire.Pmem{}, fmt.Errorf("%s: %w", op, err)
	}
	m.log.Info("pmem region created", "region", req.Name, "path", rec.Path, "size", rec.Size, "fs", fs.name, "owner", owner.String())
	return m.info(rec), nil
}

// created is the record of rec, with the identity of its file, if that
// file exists, else nil.
func created(rec state.Region) *state.Region {
	if identify(&rec) != nil {
		return nil
	}
	return &rec
}

func (m *Manager) regionDir(req wire.PmemCreate) string {
	switch {
	case req.Dir != "":
		return filepath.Clean(req.Dir)
	case req.Hugetlb:
		return DefaultHugetlbDir
	}
	return m.dir
}

// checkRegion checks the directory and the size against it.
func (m *Manager) checkRegion(op, dir string, req wire.PmemCreate) (memFS, error) {
	if req.Size <= 0 {
		return memFS{}, errorf(dm.ErrInvalidArgument, "%s: size %d: give a size such as 64M or 4G", op, req.Size)
	}
	fs, err := probeMemFS(op, dir)
	if err != nil && req.Hugetlb {
		return fs, errorf(dm.ErrInvalidArgument, "%s: --hugetlb needs a hugetlbfs mount at %s, and there is none: mount one (mount -t hugetlbfs none %s), reserve pages (/proc/sys/vm/nr_hugepages), or give --dir",
			op, dir, DefaultHugetlbDir)
	}
	if err != nil {
		return fs, err
	}
	if req.Hugetlb && fs.name != "hugetlbfs" {
		return fs, errorf(dm.ErrInvalidArgument, "%s: --hugetlb needs a hugetlbfs directory, and %s is %s: mount one (mount -t hugetlbfs none %s) and reserve pages (/proc/sys/vm/nr_hugepages)",
			op, dir, fs.name, DefaultHugetlbDir)
	}
	if req.Size > math.MaxInt64-fs.pageSize {
		return fs, errorf(dm.ErrInvalidArgument, "%s: size %d bytes is more than any memory: give a size such as 64M or 4G", op, req.Size)
	}
	if fs.free >= 0 && req.Size > fs.free {
		return fs, errorf(dm.ErrNoSpace, "%s: %s has %d bytes free and the region needs %d: choose a smaller size, or free memory there", op, dir, fs.free, req.Size)
	}
	if req.Size%fs.pageSize != 0 {
		up := (req.Size/fs.pageSize + 1) * fs.pageSize
		return fs, errorf(dm.ErrInvalidArgument, "%s: size %d is not a multiple of the %d-byte pages of %s: use %d", op, req.Size, fs.pageSize, dir, up)
	}
	return fs, nil
}

// checkRegionName applies device name rules, and no leading dot.
func checkRegionName(op, name string) error {
	if name == "" || len(name) > dm.MaxNameLen || strings.HasPrefix(name, ".") {
		return errorf(dm.ErrInvalidArgument, "%s: invalid region name %.40q: use 1 to %d characters, not starting with a dot", op, name, dm.MaxNameLen)
	}
	if bad := dm.BadNameChar(name); bad != "" {
		return errorf(dm.ErrInvalidArgument, "%s: invalid region name %q: it contains %s, which `pmem list` and the tables cannot carry: use letters, digits and punctuation such as - _ . + : @", op, name, bad)
	}
	return nil
}

// List lists the regions.
func (m *Manager) List() ([]wire.Pmem, error) {
	recs, err := m.store.Regions()
	if err != nil {
		return nil, err
	}
	out := []wire.Pmem{}
	for _, rec := range recs {
		out = append(out, m.info(rec))
	}
	return out, nil
}

// Get describes one region.
func (m *Manager) Get(name string) (wire.Pmem, error) {
	rec, err := m.region("pmem", name)
	if err != nil {
		return wire.Pmem{}, err
	}
	return m.info(rec), nil
}

func (m *Manager) region(op, name string) (state.Region, error) {
	rec, ok, err := m.store.Region(name)
	if err != nil {
		return rec, err
	}
	if !ok {
		return rec, errorf(dm.ErrNotFound, "%s %s: no such region: `daxsnap pmem list` lists them", op, name)
	}
	return rec, nil
}

// Remove deletes a region no table uses.
func (m *Manager) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, err := m.region("pmem remove", name)
	if err != nil {
		return err
	}
	if users := m.users(rec.Path); len(users) > 0 {
		return errorf(dm.ErrBusy, "pmem remove %s: the tables of %s map %s: remove those devices, or load tables without it, first",
			name, strings.Join(users, ", "), rec.Path)
	}
	remove := func() error {
		if err := os.Remove(rec.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pmem remove %s: %w", name, err)
		}
		return nil
	}
	err = m.store.RegionTransition(name, state.Op{Verb: "remove"}, rec, remove, func() *state.Region {
		if _, err := os.Lstat(rec.Path); err != nil {
			return nil
		}
		return &rec
	})
	if err == nil {
		m.log.Info("pmem region removed", "region", name, "path", rec.Path)
		m.removeRegionDir(filepath.Dir(rec.Path))
	}
	return err
}
