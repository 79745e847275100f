package state_test

import (
	"errors"
	"testing"

	"github.com/daxsnap/daxsnap/internal/state"
)

// Ensure that the record says the operation is in flight while it runs,
// and holds the outcome afterwards.
func TestDeviceTransition_success(t *testing.T) {
	s := open(t, t.TempDir())
	fn := func() error {
		rec, ok, err := s.Device("a")
		if err != nil || !ok || rec.Op != (state.Op{Verb: "create"}) {
			t.Errorf("during create: %+v, %v, %v; want Op create", rec, ok, err)
		}
		return nil
	}
	err := s.DeviceTransition("a", state.Op{Verb: "create"}, fn, func() *state.Device {
		return &state.Device{Name: "a", Live: "0 8 zero \n", Op: state.Op{Verb: "stale"}}
	})
	if err != nil {
		t.Fatal(err)
	}
	rec, ok, _ := s.Device("a")
	if !ok || !rec.Op.IsZero() || rec.Live != "0 8 zero \n" {
		t.Fatalf("after create: %+v, %v", rec, ok)
	}
}

// Ensure that fn's error is returned and the outcome still recorded.
func TestDeviceTransition_failure(t *testing.T) {
	s := open(t, t.TempDir())
	boom := errors.New("boom")
	err := s.DeviceTransition("a", state.Op{Verb: "create"}, func() error { return boom }, func() *state.Device { return nil })
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if _, ok, _ := s.Device("a"); ok {
		t.Fatal("a failed create left a record")
	}
}

// Ensure that an outcome with another name moves the record (rename).
func TestDeviceTransition_rename(t *testing.T) {
	s := open(t, t.TempDir())
	s.PutDevice(state.Device{Name: "a", UUID: "u"})
	err := s.DeviceTransition("a", state.Op{Verb: "rename"}, func() error { return nil }, func() *state.Device {
		return &state.Device{Name: "b", UUID: "u"}
	})
	if err != nil {
		t.Fatal(err)
	}
	devs, _ := s.Devices()
	if len(devs) != 1 || devs[0].Name != "b" || devs[0].UUID != "u" {
		t.Fatalf("records after rename: %+v", devs)
	}
}

// Ensure that an operation cut short by a crash (here: the store closes
// before the outcome is written) leaves Op set for the next start.
func TestDeviceTransition_interrupted(t *testing.T) {
	dir := t.TempDir()
	s, err := state.Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.PutDevice(state.Device{Name: "a", Live: "0 8 zero \n"})
	err = s.DeviceTransition("a", state.Op{Verb: "load"}, s.Close, func() *state.Device { return &state.Device{Name: "a"} })
	if err == nil {
		t.Fatal("transition on a closed store succeeded")
	}
	s = open(t, dir)
	rec, _, _ := s.Device("a")
	if rec.Op != (state.Op{Verb: "load"}) || rec.Live != "0 8 zero \n" {
		t.Fatalf("after crash: %+v, want Op load and the table before it", rec)
	}
}

// Ensure that region transitions start from the fresh record given.
func TestRegionTransition(t *testing.T) {
	s := open(t, t.TempDir())
	fresh := state.Region{Name: "r", Path: "/p", Size: 8192}
	err := s.RegionTransition("r", state.Op{Verb: "create"}, fresh, func() error {
		rec, _, _ := s.Region("r")
		if rec.Path != "/p" || rec.Op != (state.Op{Verb: "create"}) {
			t.Errorf("during create: %+v", rec)
		}
		return nil
	}, func() *state.Region { r := fresh; return &r })
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRegion("r"); err != nil {
		t.Fatal(err)
	}
	if regions, _ := s.Regions(); len(regions) != 0 {
		t.Fatalf("regions after delete: %+v", regions)
	}
}
