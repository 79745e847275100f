package daemon

import (
	"sync"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// devState is what the daemon keeps of one device beyond dm's own
// state: its owner, what the daemon has to say about it, and its open
// FUSE files.
type devState struct {
	owner access.Owner
	note  note
	fuse  map[*fuseFile]struct{} // open FUSE files, for disconnect
}

// devStates holds the devState of every device, in one place. A record
// belongs to the device itself, not to its name: it is made the first
// time the daemon keeps something for a live device (its creation, for
// most), stays with the device through renames, and goes when dm
// removes the device (forget, the daemon's dm.Manager.OnRemove
// subscriber), however it went: a remove, a deferred removal's last
// close, a snapshot verb. Devices with no record (the ones the daemon
// makes itself: snapshots, ORIGIN-real, ORIGIN-merge) have the defaults.
//
// mu is a leaf lock: taken after any device or name lock, never held
// while taking another.
type devStates struct {
	mgr *dm.Manager // finds a device by name, for the notes kept by name

	mu sync.Mutex
	m  map[*dm.Device]*devState
}

func newDevStates(mgr *dm.Manager) *devStates {
	return &devStates{mgr: mgr, m: map[*dm.Device]*devState{}}
}

// with runs fn on dev's record, made if needed, with mu held; on a
// device that was removed, it does nothing.
func (s *devStates) with(dev *dm.Device, fn func(*devState)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.m[dev]
	if st == nil {
		// Removed is set before forget takes mu: a record made here is
		// one forget drops.
		if dev.Removed() {
			return
		}
		st = &devState{owner: access.Default()}
		s.m[dev] = st
	}
	fn(st)
}

// read returns a copy of dev's owner and note (the defaults without a
// record).
func (s *devStates) read(dev *dm.Device) (access.Owner, note) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.m[dev]; st != nil {
		return st.owner, st.note
	}
	return access.Default(), note{}
}

// forget drops dev's record: dm removed dev (the OnRemove subscriber).
func (s *devStates) forget(dev *dm.Device) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, dev)
}

// owner is who owns dev (dmsetup's defaults if it was never set).
func (s *devStates) owner(dev *dm.Device) access.Owner {
	o, _ := s.read(dev)
	return o
}

func (s *devStates) setOwner(dev *dm.Device, o access.Owner) {
	s.with(dev, func(st *devState) { st.owner = o })
}

// note is the daemon's note on dev.
func (s *devStates) note(dev *dm.Device) note {
	_, n := s.read(dev)
	return n
}

// noteOn is the note on the device called name (none if there is no
// such device).
func (s *devStates) noteOn(name string) note {
	dev, err := s.mgr.Get(name)
	if err != nil {
		return note{}
	}
	return s.note(dev)
}

// updateNote changes the note on the device called name; without such
// a device there is nothing to note on, and nothing changes.
func (s *devStates) updateNote(name string, fn func(*note)) {
	if dev, err := s.mgr.Get(name); err == nil {
		s.with(dev, func(st *devState) { fn(&st.note) })
	}
}

// renameRefs rewrites the kept tables that name a renamed device, as dm's
// tables, which hold the device itself, now print it.
func (s *devStates) renameRefs(plan []rename) {
	paths := map[string]string{}
	for _, r := range plan {
		paths[MapperPrefix+r.from] = MapperPrefix + r.to
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.m {
		if st.note.keptLive != "" {
			st.note.keptLive = replaceFields(st.note.keptLive, paths)
		}
	}
}

// keptNaming lists the devices whose kept table names device dev
// (/dev/mapper/DEV as a field): no table of dm holds it, but the kept
// table will at the next start.
func (s *devStates) keptNaming(dev string) []string {
	paths := map[string]string{MapperPrefix + dev: ""}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for d, st := range s.m {
		if st.note.keptLive != "" && replaceFields(st.note.keptLive, paths) != st.note.keptLive {
			out = append(out, d.Name())
		}
	}
	return out
}

// addFUSE counts f among dev's open FUSE files (dev is open: not removed).
func (s *devStates) addFUSE(dev *dm.Device, f *fuseFile) {
	s.with(dev, func(st *devState) {
		if st.fuse == nil {
			st.fuse = map[*fuseFile]struct{}{}
		}
		st.fuse[f] = struct{}{}
	})
}

// dropFUSE forgets f, which the kernel released.
func (s *devStates) dropFUSE(f *fuseFile) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.m[f.dev]; st != nil {
		delete(st.fuse, f)
	}
}

// takeFUSE forgets every open FUSE file of dev and returns them.
func (s *devStates) takeFUSE(dev *dm.Device) []*fuseFile {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.m[dev]
	if st == nil {
		return nil
	}
	out := make([]*fuseFile, 0, len(st.fuse))
	for f := range st.fuse {
		out = append(out, f)
	}
	st.fuse = nil
	return out
}
