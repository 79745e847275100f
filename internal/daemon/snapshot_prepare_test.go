package daemon_test

import (
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that `snapshot create` prepares the snapshot (its device, the
// table that opens the COW and writes its store's header, the records)
// before the origin's suspend: writers wait from the cut to the resume,
// and only the activation belongs there. The preparation is made slow
// (it waits, FailStep "prepare-snapshot") and, while it waits, the
// daemon's own accounting must show no cut under way
// (daxsnap_dax_cuts) and the origin running; at the resume the same
// gauge must show the cut, or the check above proves nothing.
func TestSnapshot_createPreparesOutsideTheHold(t *testing.T) {
	e := newEnvWith(t, func(c *daemon.Config) { c.MetricsAddr = "127.0.0.1:0" })
	url := "http://" + e.d.MetricsAddr().String() + "/metrics"
	e.pmemVol("vol", 4*mib)                     // memory: its suspend is a cut
	for _, name := range []string{"s1", "s2"} { // ORIGIN-real made, then there
		seen := e.watchHold(url, "vol", nil, "prepare-snapshot", "resume-origin")
		e.snap("vol", name, withCOWSize(mib))
		seen.stop(name)
		if seen.cuts["prepare-snapshot"] != 0 || seen.suspended["prepare-snapshot"] {
			t.Errorf("%s: while the snapshot was prepared, daxsnap_dax_cuts = %v and vol suspended = %v; want no cut under way and vol running",
				name, seen.cuts["prepare-snapshot"], seen.suspended["prepare-snapshot"])
		}
		if seen.cuts["resume-origin"] < 1 || !seen.suspended["resume-origin"] {
			t.Errorf("%s: just before the origin's resume, daxsnap_dax_cuts = %v and vol suspended = %v; want the suspend's cut counted",
				name, seen.cuts["resume-origin"], seen.suspended["resume-origin"])
		}
		if s := e.snapList("vol"); len(s) == 0 || s[len(s)-1].Name != name || s[len(s)-1].State != wire.SnapshotActive {
			t.Fatalf("snapshots after creating %s: %+v", name, s)
		}
	}
	if cuts, _ := metricValue(scrapeHTTP(t, url), "daxsnap_dax_cuts"); cuts != 0 {
		t.Errorf("daxsnap_dax_cuts = %v once every creation returned, want 0", cuts)
	}
}

// holdWatch is what watchHold saw at each of its steps of a snapshot
// verb: the daemon's count of cuts under way (daxsnap_dax_cuts, -1 if it
// was not found) and whether the device watched was suspended.
type holdWatch struct {
	e         *env
	steps     []string
	reset     func()
	cuts      map[string]float64
	suspended map[string]bool
	// fail, set before the verb runs, is the error a step returns.
	fail map[string]error
}

// watchHold notes, at each of steps (FailStep), whether dev is held:
// the cuts under way (metrics at url) and dev's suspended flag; then it
// calls then (if not nil) with that flag, still inside the step.
func (e *env) watchHold(url, dev string, then func(step string, suspended bool), steps ...string) *holdWatch {
	w := &holdWatch{e: e, steps: steps, cuts: map[string]float64{}, suspended: map[string]bool{}}
	var mu sync.Mutex
	w.reset = e.setFailStep(func(step string) error {
		if !slices.Contains(steps, step) {
			return nil
		}
		cuts, ok := metricValue(scrapeHTTP(e.t, url), "daxsnap_dax_cuts")
		if !ok {
			cuts = -1
		}
		in, err := e.c.Info(bg, dev)
		held := err != nil || in.Suspended
		mu.Lock()
		w.cuts[step], w.suspended[step] = cuts, held
		mu.Unlock()
		if then != nil {
			then(step, held)
		}
		return w.fail[step]
	})
	return w
}

// stop ends the watch, once the verb it watched (what) has returned,
// and fails the test unless it went through every step.
func (w *holdWatch) stop(what string) {
	w.e.t.Helper()
	w.reset()
	for _, step := range w.steps {
		if _, ok := w.cuts[step]; !ok {
			w.e.t.Fatalf("%s: the verb never reached step %s", what, step)
		}
	}
}

// Ensure that a creation the daemon stopped in after preparing the
// snapshot's device, before the origin's suspend, is undone at start: the
// device is there without a live table (with the snapshot table loaded,
// or none yet) and goes, with its COW.
func TestSnapshot_interruptedWhilePrepared(t *testing.T) {
	for _, loaded := range []bool{true, false} {
		name := map[bool]string{true: "table loaded", false: "no table"}[loaded]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.fileVol("vol", volSize)
			e.snap("vol", "s1")
			e.snap("vol", "s2")
			table := e.table("s2", false)
			e.stop()
			e.editRecord("vol", func(r *state.Device) { r.Op = state.Op{Verb: "snapshot-create", Arg: "s2"} })
			e.editRecord("s2", func(r *state.Device) {
				r.Live, r.Inactive = "", ""
				if loaded {
					r.Inactive = table
				}
			})
			e.start()
			e.wantOnlyS1()
		})
	}
}

// wantOnlyS1 fails unless vol's only snapshot is s1, active, with its COW
// the only one.
func (e *env) wantOnlyS1() {
	e.t.Helper()
	e.wantDevices("vol", "vol-real", "s1")
	if l := e.snapList("vol"); len(l) != 1 || l[0].Name != "s1" || l[0].State != wire.SnapshotActive {
		e.t.Fatalf("list: %+v", l)
	}
	if f := e.cowFiles(); strings.Join(f, " ") != "s1.cow" {
		e.t.Fatalf("COW files: %v", f)
	}
}
