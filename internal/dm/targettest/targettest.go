// Package targettest is the conformance suite every dm target runs, as
// containerd's snapshotter testsuite is for snapshotters. A target's test
// describes one table line in a Case (type, devices, arguments, expected
// status text, constructor errors, reference Model) and calls Run. The
// suite checks, on backingtest.Mem devices opened through a dm.DevicePool:
//
//   - status: StatusTable and StatusInfo are the expected text, and the
//     StatusTable arguments build a target with an identical StatusTable
//     over the same device ranges;
//   - ctor-errors: every listed bad argument list fails with the expected
//     reason, without the type name (the core adds it), and leaks no device;
//   - ctor-random-args: constructors never panic on random arguments, and
//     whatever they accept round-trips through StatusTable;
//   - model: a rapid property test of random ReadAt, WriteAt, Discard,
//     WriteZeroes, Flush and DirectAccess against the Model, comparing
//     the backing devices' bytes with the model's after every step;
//   - concurrent: disjoint ranges written and read from several goroutines
//     (run it with -race);
//   - mapped-device: the property test again through a dm.Manager device
//     made from a one-line table, plus out-of-range I/O and table/status
//     text as dmsetup prints them.
//
// RunSnapshot is the two-view case for targets that make a snapshot of an
// origin (snapshot-origin and snapshot): random I/O on both views through
// a dm.Manager, against a model that keeps the snapshot's point-in-time
// image while the origin changes. Record runs any of these on a fake TB,
// to show that they fail on a deliberately broken target.
//
// Every check that builds a target ends with Close, a second Close that
// must not panic, and
// CtorContext.Release, after which the pool must hold no device.
// DirectAccess is exercised only when every Case device is DAX-capable, as
// the core only calls it then.
package targettest

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// TB is what the suite needs from a test. It is rapid.TB, so the suite can
// run on a recording fake to show that it fails on a broken target.
type TB = rapid.TB

// Device is a backing device of a Case, created as a backingtest.Mem
// filled with random bytes for every run (unless Zeroed).
type Device struct {
	Name string // as the table arguments name it
	Size int64  // bytes, a multiple of dm.SectorSize
	Caps backing.Capability
	// Zeroed: the device starts all zeroes (a fresh COW device), not
	// random.
	Zeroed bool
}

// CtorError is an argument list the constructor must refuse.
type CtorError struct {
	Name string
	Len  dm.Sector // target length; 0 means Case.Len
	Args []string
	Want string // text the error must contain
}

// Case describes one table line to check.
type Case struct {
	Type    *dm.TargetType
	Devices []Device
	Len     dm.Sector // target length in sectors
	Args    []string
	Model   ModelFunc
	// Table and Info are the exact StatusTable and StatusInfo text of a
	// target built from Args that has seen no I/O error.
	Table, Info string
	CtorErrors  []CtorError
}

type check struct {
	name string
	run  func(TB, Case)
}

var checks = []check{
	{"status", checkStatus},
	{"ctor-errors", checkCtorErrors},
	{"ctor-random-args", checkRandomArgs},
	{"model", checkModel},
	{"concurrent", checkConcurrent},
	{"mapped-device", checkMapped},
}

// Run runs every check on c, each as a subtest.
func Run(t *testing.T, c Case) {
	t.Helper()
	for _, ch := range checks {
		t.Run(ch.name, func(t *testing.T) { ch.run(t, c) })
	}
}

// Check runs every check on c in turn on tb, without subtests, so that a
// fake TB can record the outcome. It stops after the first failing check
// (rapid refuses to start on a failed TB).
func Check(tb TB, c Case) {
	tb.Helper()
	for _, ch := range checks {
		if tb.Failed() {
			return
		}
		tb.Logf("targettest: %s", ch.name)
		ch.run(tb, c)
	}
}

func (c Case) validate(tb TB) {
	tb.Helper()
	if c.Type == nil || c.Type.New == nil || c.Model == nil || c.Len == 0 {
		tb.Fatalf("targettest: Case needs Type (with New), Model and a non-zero Len")
	}
	for _, d := range c.Devices {
		if d.Size <= 0 || d.Size%dm.SectorSize != 0 {
			tb.Fatalf("targettest: device %s: size %d is not a positive multiple of %d", d.Name, d.Size, dm.SectorSize)
		}
	}
}

// daxOK reports whether the core would call DirectAccess: every device is
// DAX-capable (vacuously so for targets without devices).
func (c Case) daxOK() bool {
	for _, d := range c.Devices {
		if !d.Caps.Has(backing.DAX) {
			return false
		}
	}
	return true
}

// construct calls the constructor, turning a panic into an error so that
// bad input is reported as the target's failure, not the suite's crash.
func construct(tt *dm.TargetType, ctx *dm.CtorContext, args []string) (t dm.Target, err error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			t, err, panicked = nil, fmt.Errorf("constructor panicked: %v", r), true
		}
	}()
	t, err = tt.New(ctx, args)
	return t, err, false
}
