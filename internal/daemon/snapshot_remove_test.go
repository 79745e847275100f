package daemon_test

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that `snapshot remove` releases the snapshot's tables (its COW
// store closed, its memory unmapped) after the origin's resume, not while
// the origin's writers are held. The release is made to wait (FailStep
// "release-snapshot") and, while it waits, the origin must be running
// with no cut under way (daxsnap_dax_cuts), and a write to it must
// complete, copying out to the snapshots that remain; inside the suspend
// (FailStep "remove-snapshot") the same gauge must show the cut, or the
// check proves nothing. Both removals are covered: one that leaves a
// snapshot (the origin keeps snapshot-origin) and the last (the origin
// gets ORIGIN-real's table back and ORIGIN-real goes, once the released
// snapshot let go of it).
func TestSnapshot_removeReleasesAfterTheHold(t *testing.T) {
	e := newEnvWith(t, func(c *daemon.Config) { c.MetricsAddr = "127.0.0.1:0" })
	url := "http://" + e.d.MetricsAddr().String() + "/metrics"
	const size = 4 * mib
	e.pmemVol("vol", size) // memory: its suspend is a cut
	rnd := rand.New(rand.NewPCG(11, 6))
	vol := randBytes(rnd, size)
	e.write("vol", 0, vol)
	e.snap("vol", "s1", withCOWSize(mib))
	s1 := append([]byte(nil), vol...)
	e.snap("vol", "s2", withCOWSize(mib))

	for i, name := range []string{"s2", "s1"} {
		off := int64(i) * 64 << 10
		data := randBytes(rnd, 4096)
		wrote := errNotTried
		write := func(step string, suspended bool) {
			// Suspended, the write would wait for the resume, which
			// waits for this release: it is not tried.
			if step == "release-snapshot" && !suspended {
				wrote = e.c.WriteData(bg, "vol", off, data)
			}
		}
		seen := e.watchHold(url, "vol", write, "remove-snapshot", "release-snapshot")
		e.must("remove "+name, e.c.SnapshotRemove(bg, name))
		seen.stop("remove " + name)
		if seen.cuts["remove-snapshot"] < 1 || !seen.suspended["remove-snapshot"] {
			t.Errorf("%s: inside the origin's suspend, daxsnap_dax_cuts = %v and vol suspended = %v; want the suspend's cut counted",
				name, seen.cuts["remove-snapshot"], seen.suspended["remove-snapshot"])
		}
		if seen.cuts["release-snapshot"] != 0 || seen.suspended["release-snapshot"] {
			t.Fatalf("%s: while the removed snapshot's tables were released, daxsnap_dax_cuts = %v and vol suspended = %v; want no cut under way and vol running",
				name, seen.cuts["release-snapshot"], seen.suspended["release-snapshot"])
		}
		if wrote != nil {
			t.Fatalf("%s: a write to vol while the removed snapshot's tables were released: %v", name, wrote)
		}
		copy(vol[off:], data)
		e.wantData("vol", vol)
		if name == "s2" {
			e.wantData("s1", s1) // the write copied out to s1 first
		}
	}
	e.wantDevices("vol")
	if cuts, _ := metricValue(scrapeHTTP(t, url), "daxsnap_dax_cuts"); cuts != 0 {
		t.Errorf("daxsnap_dax_cuts = %v once every removal returned, want 0", cuts)
	}
}

// errNotTried is a step's outcome until it runs.
var errNotTried = errors.New("not tried")

// Ensure that the end of a merge and the undo of a failed creation, which
// remove a snapshot under the origin's suspend as `snapshot remove` does,
// also release its tables only once the origin runs again: while the
// release waits (FailStep "release-snapshot"), no cut is under way, the
// origin is not suspended and a write to it completes, and it lands.
// Removed under the hold as before, the release is never reached with the
// origin running.
func TestSnapshot_mergeEndAndCreateUndoReleaseAfterTheHold(t *testing.T) {
	for _, verb := range []string{"merge", "create-undo"} {
		t.Run(verb, func(t *testing.T) {
			e := newEnvWith(t, func(c *daemon.Config) { c.MetricsAddr = "127.0.0.1:0" })
			url := "http://" + e.d.MetricsAddr().String() + "/metrics"
			const size = 4 * mib
			e.pmemVol("vol", size)
			rnd := rand.New(rand.NewPCG(12, 7))
			vol := randBytes(rnd, size)
			e.write("vol", 0, vol)
			steps := []string{"release-snapshot"}
			if verb == "merge" {
				e.snap("vol", "s1", withCOWSize(mib))
				later := randBytes(rnd, 64<<10)
				e.write("vol", 128<<10, later) // the merge takes it back
			} else {
				steps = append(steps, "record-snapshot")
			}
			const off = 512 << 10
			data := randBytes(rnd, 4096)
			wrote := errNotTried
			write := func(step string, suspended bool) {
				if step == "release-snapshot" && !suspended {
					wrote = e.c.WriteData(bg, "vol", off, data)
				}
			}
			seen := e.watchHold(url, "vol", write, steps...)
			var err error
			if verb == "merge" {
				_, err = e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{})
			} else {
				seen.fail = map[string]error{"record-snapshot": errors.New("injected failure")}
				_, err = e.c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "vol", Name: "s1", COWSize: mib})
				if err != nil && strings.Contains(err.Error(), "injected failure") {
					err = nil
				} else if err == nil {
					err = errors.New("the creation succeeded despite the injected failure")
				}
			}
			seen.stop(verb)
			if err != nil {
				t.Fatal(err)
			}
			if seen.cuts["release-snapshot"] != 0 || seen.suspended["release-snapshot"] {
				t.Fatalf("while the removed snapshot's tables were released, daxsnap_dax_cuts = %v and vol suspended = %v; want no cut under way and vol running",
					seen.cuts["release-snapshot"], seen.suspended["release-snapshot"])
			}
			if wrote != nil {
				t.Fatalf("a write to vol while the removed snapshot's tables were released: %v", wrote)
			}
			copy(vol[off:], data)
			e.wantData("vol", vol)
			e.wantDevices("vol")
		})
	}
}
