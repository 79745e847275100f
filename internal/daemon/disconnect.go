package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/export/fusefs"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// daxsnap disconnect DEVICE: root takes a device back from its NBD
// clients and open FUSE files, which otherwise keep it busy (remove,
// snapshot remove and merge refuse) for as long as they like. NBD
// connections on the device are closed; open FUSE files are revoked:
// their reads and writes fail with ENXIO from then on, and the device
// counts them no more. DAX mappings are left alone: their clients give
// them back through their session (a recall).

// Disconnect closes dev's NBD connections and revokes its open FUSE
// files, then waits (a while) for the NBD connections to let go.
func (d deviceService) Disconnect(ctx context.Context, name string) (wire.Disconnected, error) {
	dev, err := d.device("disconnect", name)
	if err != nil {
		return wire.Disconnected{}, err
	}
	out := wire.Disconnected{Name: name}
	out.NBD = d.exports.disconnectNBD(name)
	out.FUSEFiles = d.devs.revokeFUSE(dev)
	d.log.Info("disconnected a device's users", "device", name, "nbd", out.NBD, "fuse_files", out.FUSEFiles)
	// A closed connection lets go once its requests in flight finish.
	for deadline := time.Now().Add(10 * time.Second); nbdHolders(dev) > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return out, errorf(dm.ErrBusy, "disconnect %s: still held by %d NBD connection(s) 10 s after closing them (requests in flight on a slow backend?): try again shortly", name, nbdHolders(dev))
		}
	}
	return out, nil
}

func nbdHolders(dev *dm.Device) int {
	n := 0
	for _, h := range dev.Holders() {
		if h.Kind == dm.HolderNBD {
			n += h.N
		}
	}
	return n
}

// holderList is Info.Holders: dev's holders, and its DAX mappings by
// session.
func (hs *holders) holderList(dev *dm.Device) []wire.Holder {
	var out []wire.Holder
	for _, h := range dev.Holders() {
		w := wire.Holder{Kind: h.Kind, Who: h.Who, PID: -1, UID: -1, Count: h.N}
		if h.PID != 0 {
			w.PID, w.UID = h.PID, h.UID
		}
		if w.Kind == "" {
			w.Kind = "open"
		}
		out = append(out, w)
	}
	for _, s := range hs.sessions.of(dev.Name()) {
		out = append(out, wire.Holder{Kind: userDAX, Who: fmt.Sprintf("DAX session of pid %d%s", s.pid, comm(s.pid)),
			PID: s.pid, UID: int(s.uid), Count: s.n})
	}
	return out
}

// fuseFile is one open FUSE file: its I/O goes to be until revoked, and
// fails with ENXIO after. Its device's devState counts it until then.
type fuseFile struct {
	set     *devStates
	dev     *dm.Device
	be      fusefs.Backend
	mu      sync.RWMutex // I/O holds it shared; revoke exclusively
	revoked bool
	once    sync.Once
	release func()
}

func (s *devStates) openFUSE(dev *dm.Device, be fusefs.Backend, release func()) *fuseFile {
	f := &fuseFile{set: s, dev: dev, be: be, release: release}
	s.addFUSE(dev, f)
	return f
}

// revokeFUSE revokes every open FUSE file of dev and returns how many.
func (s *devStates) revokeFUSE(dev *dm.Device) int {
	files := s.takeFUSE(dev)
	for _, f := range files {
		f.mu.Lock() // waits for I/O under way
		f.revoked = true
		f.mu.Unlock()
		f.once.Do(f.release)
	}
	return len(files)
}

// close is the kernel's release of the file.
func (f *fuseFile) close() {
	f.set.dropFUSE(f)
	f.once.Do(f.release)
}

func (f *fuseFile) errRevoked() error {
	return fmt.Errorf("%w: FUSE file of %s was disconnected by root (daxsnap disconnect): open it again", dm.ErrNotFound, f.dev.Name())
}

func (f *fuseFile) Size() int64 { return f.be.Size() }

// guard runs fn unless f is revoked, holding off revoke meanwhile.
func (f *fuseFile) guard(fn func() error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.revoked {
		return f.errRevoked()
	}
	return fn()
}

func (f *fuseFile) ReadAt(p []byte, off int64) (n int, err error) {
	err = f.guard(func() error { n, err = f.be.ReadAt(p, off); return err })
	return n, err
}

func (f *fuseFile) WriteAt(p []byte, off int64) (n int, err error) {
	err = f.guard(func() error { n, err = f.be.WriteAt(p, off); return err })
	return n, err
}

// LendRead lends be's memory for a read (dm.Lender), holding off
// revoke until the loan ends, as a read under way does.
func (f *fuseFile) LendRead(off, n int64) ([]byte, func(), bool) {
	f.mu.RLock()
	if f.revoked {
		f.mu.RUnlock()
		return nil, nil, false // ReadAt says why
	}
	mem, release, ok := dm.LendFrom(f.be, off, n)
	if !ok {
		f.mu.RUnlock()
		return nil, nil, false
	}
	return mem, func() { release(); f.mu.RUnlock() }, true
}

func (f *fuseFile) Flush() error { return f.guard(f.be.Flush) }

func (f *fuseFile) WriteZeroes(off, n int64) error {
	return f.guard(func() error { return f.be.WriteZeroes(off, n) })
}
