package daemon_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/wire"
)

func withAutoextend(threshold, percent int) func(*wire.SnapshotCreate) {
	return func(r *wire.SnapshotCreate) { r.AutoextendThreshold, r.AutoextendPercent = threshold, percent }
}

// fillOrigin writes n bytes of new data over origin in 64 KiB writes, as
// fast as the API takes them; every write copies chunks out to the
// snapshots. It returns the first write error.
func (e *env) fillOrigin(origin string, n int64) error {
	data := bytes.Repeat([]byte{0xd7}, 64<<10)
	for off := int64(0); off < n; off += int64(len(data)) {
		if err := e.c.WriteData(bg, origin, off, data); err != nil {
			return err
		}
	}
	return nil
}

// Ensure that a snapshot with autoextend, filled by origin writes far
// past its COW's first size and past its threshold, is extended and never
// invalidated (LVM's snapshot_autoextend_threshold), that crossing the
// threshold raises a device event and counts in the metrics, and that the
// same workload without autoextend invalidates the snapshot.
func TestAutoextend_fillingSnapshotIsExtendedNotInvalidated(t *testing.T) {
	testAutoextendFilling(t, (*env).fileVol)
}

// The same for a snapshot of a memory origin, whose COW the daemon puts
// on tmpfs: it grows in place. Before memory COWs could grow, autoextend
// failed and the snapshot was invalidated.
func TestAutoextend_memoryCOW(t *testing.T) { testAutoextendFilling(t, (*env).pmemVol) }

func testAutoextendFilling(t *testing.T, volume func(e *env, name string, size int64) string) {
	e := newEnv(t)
	const size = 16 * mib
	volume(e, "vol", size)
	s := e.snap("vol", "grows", withCOWSize(mib), withAutoextend(70, 50))
	if s.AutoextendThreshold != 70 || s.AutoextendPercent != 50 {
		t.Fatalf("snapshot create: autoextend %d%%/%d%%, want 70/50", s.AutoextendThreshold, s.AutoextendPercent)
	}
	ev := e.info("grows").EventNr

	if err := e.fillOrigin("vol", 8*mib); err != nil {
		t.Fatalf("origin write while the snapshot fills: %v", err)
	}
	got, err := e.c.Snapshot(bg, "grows")
	if err != nil || got.State != wire.SnapshotActive {
		t.Fatalf("after 8 MiB of origin writes over a 1 MiB COW with autoextend: %+v, %v; want active", got, err)
	}
	if got.Total*512 < 8*mib {
		t.Fatalf("COW is %d bytes after holding 8 MiB of old data: it did not grow", got.Total*512)
	}
	e.wantData("grows", make([]byte, 8*mib))
	if in := e.info("grows"); in.EventNr <= ev {
		t.Fatalf("event number of grows stayed %d: crossing the threshold raised no event", in.EventNr)
	}
	m := e.metrics()
	for _, want := range []string{`daxsnap_snapshot_cow_threshold_crossings_total{device="grows"}`, `daxsnap_snapshot_cow_autoextends_total{device="grows"}`} {
		if !strings.Contains(m, want) {
			t.Fatalf("metrics lack %s:\n%s", want, grepLines(m, "daxsnap_snapshot"))
		}
	}

	// The policy is the snapshot's own and survives a restart.
	e.restart()
	if got, _ := e.c.Snapshot(bg, "grows"); got.State != wire.SnapshotActive || got.AutoextendThreshold != 70 {
		t.Fatalf("after restart: %+v, want active with threshold 70", got)
	}
	if err := e.fillOrigin("vol", size); err != nil {
		t.Fatalf("origin write after restart: %v", err)
	}
	if got, _ := e.c.Snapshot(bg, "grows"); got.State != wire.SnapshotActive {
		t.Fatalf("after filling the whole origin past a restart: %+v, want active", got)
	}
	e.wantData("grows", make([]byte, size))
}

// The control: without autoextend the workload above invalidates the
// snapshot (so the test above tests autoextend, not a large COW).
func TestAutoextend_withoutItTheWorkloadInvalidates(t *testing.T) {
	e := newEnv(t)
	e.fileVol("vol", 16*mib)
	e.snap("vol", "fixed", withCOWSize(mib))
	if err := e.fillOrigin("vol", 8*mib); err != nil {
		t.Fatalf("origin writes must not fail when a snapshot fills up: %v", err)
	}
	if got, _ := e.c.Snapshot(bg, "fixed"); got.State != wire.SnapshotInvalid {
		t.Fatalf("a 1 MiB COW without autoextend after 8 MiB of writes: %+v, want invalid", got)
	}
}

// Ensure that serve's default policy applies to snapshots without their
// own, that a snapshot can turn it off (threshold 100), and that bad
// policies are refused with what to give instead.
func TestAutoextend_daemonDefault(t *testing.T) {
	e := newEnv(t)
	e.stop()
	e.cfg.Snapshots.AutoextendThreshold, e.cfg.Snapshots.AutoextendPercent = 60, 100
	e.start()
	e.fileVol("vol", 16*mib)
	s := e.snap("vol", "dflt", withCOWSize(mib))
	if s.AutoextendThreshold != 60 || s.AutoextendPercent != 100 {
		t.Fatalf("snapshot under serve's policy: %d%%/%d%%, want 60/100", s.AutoextendThreshold, s.AutoextendPercent)
	}
	off := e.snap("vol", "off", withCOWSize(mib), withAutoextend(100, 0))
	if off.AutoextendThreshold != 0 {
		t.Fatalf("threshold 100 must turn autoextend off: %+v", off)
	}
	if err := e.fillOrigin("vol", 4*mib); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.c.Snapshot(bg, "dflt"); got.State != wire.SnapshotActive {
		t.Fatalf("dflt: %+v, want active", got)
	}
	if got, _ := e.c.Snapshot(bg, "off"); got.State != wire.SnapshotInvalid {
		t.Fatalf("off: %+v, want invalid", got)
	}
	for _, c := range []struct {
		threshold, percent int
		want               string
	}{{30, 20, "50 to 99"}, {0, 20, "without a threshold"}, {70, -1, "1 to 1000"}} {
		_, err := e.c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "vol", Name: "bad", AutoextendThreshold: c.threshold, AutoextendPercent: c.percent})
		wantCode(t, err, wire.CodeInvalidArgument, c.want)
	}
}
