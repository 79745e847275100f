package daemon

import (
	"fmt"
	"slices"
	"strings"

	"github.com/daxsnap/daxsnap/internal/export/nbd"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Changed-block tracking over NBD: a snapshot's export offers
// qemu:dirty-bitmap:SINCE for every older snapshot SINCE of its origin
// (the chunks that changed from SINCE to it), the origin's export one per
// snapshot (the chunks changed since it, as of the connection's
// NBD_OPT_GO). They are the answers of `snapshot diff`
// (internal/snapshots' track.go): only the pairs it answers exactly are
// offered. A client sees a bitmap only if it may read both devices.

var _ nbd.MetaContexter = exportSet{}

// bitmapPair is what one dirty bitmap of export compares: from SINCE to
// export (a snapshot), or to the live origin (to == "").
func (e *exports) bitmapPair(export, since string) wire.SnapshotDiffRequest {
	req := wire.SnapshotDiffRequest{From: since, To: export}
	if s, err := e.snaps.Snapshot(export); err != nil || s.Origin == "" {
		req.To = "" // export is no snapshot: the origin, live
	}
	return req
}

// bitmapCandidates names the snapshots export may have a bitmap since:
// its origin's snapshots (its own, for an origin).
func (e *exports) bitmapCandidates(export string) []string {
	origin := export
	if s, err := e.snaps.Snapshot(export); err == nil {
		origin = s.Origin
	}
	return slices.DeleteFunc(e.snaps.SnapshotsOf(origin), func(n string) bool { return n == export })
}

// MetaContexts lists the dirty bitmaps export offers c.
func (s exportSet) MetaContexts(c *nbd.Client, export string) []string {
	e := s.e
	if e.snaps == nil {
		return nil
	}
	id, err := e.auth.nbdIdentify(c)
	if err != nil {
		return nil
	}
	var out []string
	for _, since := range e.bitmapCandidates(export) {
		if _, ok := e.bitmap(id, export, since); ok {
			out = append(out, nbd.DirtyBitmapPrefix+since)
		}
	}
	slices.Sort(out)
	return out
}

// bitmap is the diff behind export's bitmap since SINCE (one of its
// candidates), and whether it is offered to id: id may read both devices
// (a snapshot's changes are its owner's to see), and snapshot diff
// answers the pair exactly.
func (e *exports) bitmap(id nbdIdentity, export, since string) (wire.SnapshotDiff, bool) {
	for _, name := range []string{export, since} {
		dev, err := e.mgr.Get(name)
		if err != nil {
			return wire.SnapshotDiff{}, false
		}
		if _, err := e.auth.nbdAccess(id, dev); err != nil {
			return wire.SnapshotDiff{}, false
		}
	}
	d, err := e.snaps.SnapshotDiff(e.bitmapPair(export, since))
	return d, err == nil
}

// metaOpener opens the contexts a connection of c to export selected:
// only a context MetaContexts offers c, with its one diff (not every
// candidate's again).
func (s exportSet) metaOpener(c *nbd.Client, export string) func(string) (nbd.MetaMap, error) {
	return func(context string) (nbd.MetaMap, error) {
		e := s.e
		since, ok := strings.CutPrefix(context, nbd.DirtyBitmapPrefix)
		if !ok || e.snaps == nil {
			return nil, fmt.Errorf("no metadata context %q on %s", context, export)
		}
		var d wire.SnapshotDiff
		id, err := e.auth.nbdIdentify(c)
		if err == nil && slices.Contains(e.bitmapCandidates(export), since) {
			d, ok = e.bitmap(id, export, since)
		} else {
			ok = false
		}
		if !ok {
			return nil, fmt.Errorf("metadata context %q is not offered to this client on %s", context, export)
		}
		r := &nbd.Ranges{Size: d.Size, Flags: nbd.StateDirty}
		for _, x := range d.Extents {
			r.Offs, r.Lens = append(r.Offs, x.Off), append(r.Lens, x.Len)
		}
		return r, nil
	}
}
