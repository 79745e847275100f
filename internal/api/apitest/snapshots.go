package apitest

import (
	"testing"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// checkSnapshots: a snapshot is set up as LVM does it (ORIGIN-real under
// ORIGIN and NAME), keeps the origin's data of its time, is listed by
// origin and by name, grows with extend, and goes with remove.
func checkSnapshots(t testing.TB, svc api.Service) {
	vol(t, svc, "o", mib)
	a, b := pattern(1, mib), pattern(2, 64<<10)
	must(t, "write o", svc.WriteData(t.Context(), "o", 0, a))
	s, err := svc.SnapshotCreate(t.Context(), wire.SnapshotCreate{Origin: "o", Name: "s", COWSize: mib / 2})
	must(t, "snapshot create o s", err)
	want := wire.Snapshot{Name: "s", Origin: "o", COWOwned: true, Store: "P", ChunkSize: 4096, Sectors: mib / 512, State: wire.SnapshotActive}
	wantSnapshot(t, "created", s, want)
	wantDevices(t, svc, "o", "o-real", "s")

	for _, origin := range []string{"o", ""} {
		list, err := svc.Snapshots(t.Context(), origin)
		must(t, "snapshots of "+origin, err)
		if len(list) != 1 {
			t.Fatalf("snapshots of %q: %+v, want s", origin, list)
		}
		wantSnapshot(t, "listed", list[0], want)
	}
	s, err = svc.Snapshot(t.Context(), "s")
	must(t, "snapshot show s", err)
	wantSnapshot(t, "shown", s, want)

	must(t, "write o after the snapshot", svc.WriteData(t.Context(), "o", 4096, b))
	wantData(t, svc, "s", 0, a)
	wantData(t, svc, "o", 4096, b)
	if s, err := svc.Snapshot(t.Context(), "s"); err != nil || s.Exceptions != uint64(len(b)/4096) {
		t.Errorf("snapshot s after writing %d chunks of o: %+v, %v", len(b)/4096, s, err)
	}

	_, err = svc.SnapshotCreate(t.Context(), wire.SnapshotCreate{Origin: "o", Name: "s"})
	wantCode(t, "snapshot create of a taken name", err, wire.CodeExists)
	_, err = svc.SnapshotCreate(t.Context(), wire.SnapshotCreate{Origin: "nope", Name: "s2"})
	wantCode(t, "snapshot create of a missing origin", err, wire.CodeNotFound)
	_, err = svc.Snapshots(t.Context(), "nope")
	wantCode(t, "snapshots of a missing origin", err, wire.CodeNotFound)

	before := s.Total
	s, err = svc.SnapshotExtend(t.Context(), "s", wire.SnapshotExtend{Add: mib})
	must(t, "snapshot extend s", err)
	if s.Name != "s" || s.Total <= before {
		t.Errorf("extended by 1 MiB: %+v, total was %d sectors", s, before)
	}

	must(t, "snapshot remove s", svc.SnapshotRemove(t.Context(), "s"))
	_, err = svc.Snapshot(t.Context(), "s")
	wantCode(t, "snapshot show after remove", err, wire.CodeNotFound)
	err = svc.SnapshotRemove(t.Context(), "s")
	wantCode(t, "snapshot remove again", err, wire.CodeNotFound)
	wantDevices(t, svc, "o")
	wantData(t, svc, "o", 4096, b)
	if list, err := svc.Snapshots(t.Context(), ""); err != nil || len(list) != 0 {
		t.Errorf("snapshots after remove: %+v, %v", list, err)
	}
}

// wantSnapshot compares what a snapshot is (not its usage, which the
// metadata's layout decides, nor its COW path or note).
func wantSnapshot(t testing.TB, what string, got, want wire.Snapshot) {
	t.Helper()
	if got.Name != want.Name || got.Origin != want.Origin || got.COWOwned != want.COWOwned || got.Store != want.Store ||
		got.ChunkSize != want.ChunkSize || got.Sectors != want.Sectors || got.State != want.State {
		t.Errorf("%s: snapshot %+v, want %+v", what, got, want)
	}
}

// checkMerge: a merge gives the origin the snapshot's data back and
// removes the snapshot; without no_wait it answers when it has finished,
// with no_wait a second merge call waits for it.
func checkMerge(t testing.TB, svc api.Service) {
	vol(t, svc, "o", mib)
	a := pattern(3, mib)
	must(t, "write o", svc.WriteData(t.Context(), "o", 0, a))
	_, err := svc.SnapshotCreate(t.Context(), wire.SnapshotCreate{Origin: "o", Name: "s"})
	must(t, "snapshot create o s", err)
	must(t, "write o after the snapshot", svc.WriteData(t.Context(), "o", 8192, pattern(4, 3*4096)))

	s, err := svc.SnapshotMerge(t.Context(), "s", wire.SnapshotMerge{})
	must(t, "snapshot merge s", err)
	if s.Name != "s" || s.Origin != "o" || s.State != wire.SnapshotMerged {
		t.Errorf("merged: %+v, want s of o, state merged", s)
	}
	wantData(t, svc, "o", 0, a)
	wantDevices(t, svc, "o")
	_, err = svc.Snapshot(t.Context(), "s")
	wantCode(t, "snapshot show after the merge", err, wire.CodeNotFound)

	_, err = svc.SnapshotCreate(t.Context(), wire.SnapshotCreate{Origin: "o", Name: "s2"})
	must(t, "snapshot create o s2", err)
	must(t, "write o after s2", svc.WriteData(t.Context(), "o", 0, pattern(5, 5*4096)))
	s, err = svc.SnapshotMerge(t.Context(), "s2", wire.SnapshotMerge{NoWait: true})
	must(t, "snapshot merge s2 without waiting", err)
	if s.Name != "s2" || (s.State != wire.SnapshotMerging && s.State != wire.SnapshotMerged) {
		t.Errorf("merge started: %+v, want s2 merging or merged", s)
	}
	s, err = svc.SnapshotMerge(t.Context(), "s2", wire.SnapshotMerge{})
	must(t, "snapshot merge s2 again, waiting", err)
	if s.Name != "s2" || s.State != wire.SnapshotMerged {
		t.Errorf("merge waited for: %+v, want s2 merged", s)
	}
	wantData(t, svc, "o", 0, a)
	wantDevices(t, svc, "o")

	_, err = svc.SnapshotMerge(t.Context(), "nope", wire.SnapshotMerge{})
	wantCode(t, "snapshot merge of a missing snapshot", err, wire.CodeNotFound)
}
