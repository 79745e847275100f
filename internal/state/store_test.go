package state_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/state"
	bolt "go.etcd.io/bbolt"
)

func open(t *testing.T, dir string) *state.Store {
	t.Helper()
	s, err := state.Open(dir, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Ensure that records survive closing and reopening the file.
func TestStore_reopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	want := state.Device{Name: "a", UUID: "u", Live: "0 8 zero \n", Inactive: "0 16 zero \n", Suspended: true}
	if err := s.PutDevice(want); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRegion(state.Region{Name: "r", Path: "/dev/shm/x/r", Size: 4096}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir)
	got, ok, err := s.Device("a")
	if err != nil || !ok || got != want {
		t.Fatalf("Device(a) = %+v, %v, %v; want %+v", got, ok, err, want)
	}
	regions, err := s.Regions()
	if err != nil || len(regions) != 1 || regions[0].Size != 4096 {
		t.Fatalf("Regions() = %+v, %v", regions, err)
	}
}

// Ensure that a second Open of a held directory is refused, naming the
// holder's pid (this process: flock conflicts between open files).
func TestOpen_locked(t *testing.T) {
	dir := t.TempDir()
	open(t, dir)
	_, err := state.Open(dir, 20*time.Millisecond)
	var le *state.LockedError
	if !errors.As(err, &le) || !errors.Is(err, state.ErrLocked) {
		t.Fatalf("second Open: %v, want a LockedError", err)
	}
	if le.PID != os.Getpid() {
		t.Errorf("holder pid %d, want %d", le.PID, os.Getpid())
	}
	msg := err.Error()
	for _, want := range []string{"another daxsnap serve holds", filepath.Join(dir, state.FileName), "pid", "--state"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
}

// Ensure that a file with another format version is refused, not rewritten.
func TestOpen_formatVersion(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, state.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		return b.Put([]byte("version"), []byte{0, 0, 0, 9})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, err = state.Open(dir, 0)
	if !errors.Is(err, state.ErrFormat) || !strings.Contains(err.Error(), "another --state") {
		t.Fatalf("Open: %v, want ErrFormat with advice", err)
	}
}

// Ensure that a device record written before daxsnap kept owners (no
// "owner" key, format version 1 all the same) still loads, with no Owner,
// and that an owner round-trips, gid 0 and mode 0 included.
func TestStore_ownerCompat(t *testing.T) {
	dir := t.TempDir()
	const old = `{"name":"old","uuid":"u","live":"0 8 zero \n","suspended":true}`
	writeVersion1(t, dir, map[string]string{"old": old}, nil)
	s := open(t, dir)
	got, ok, err := s.Device("old")
	want := state.Device{Name: "old", UUID: "u", Live: "0 8 zero \n", Suspended: true}
	if err != nil || !ok || got != want {
		t.Fatalf("old record = %+v, %v, %v; want %+v (no owner)", got, ok, err, want)
	}
	rec := state.Device{Name: "new", Live: "0 8 zero \n", Owner: &state.Owner{UID: 65534, GID: 0, Mode: 0}}
	if err := s.PutDevice(rec); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir)
	got, _, err = s.Device("new")
	if err != nil || got.Owner == nil || *got.Owner != *rec.Owner {
		t.Fatalf("new record = %+v (owner %+v), %v; want owner %+v", got, got.Owner, err, *rec.Owner)
	}
}

// writeVersion1 makes a state file of format version 1 in dir holding
// the given device and region records as raw JSON, as an earlier daxsnap
// wrote them.
func writeVersion1(t *testing.T, dir string, devices, regions map[string]string) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, state.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		if err := meta.Put([]byte("version"), []byte{0, 0, 0, 1}); err != nil {
			return err
		}
		for bucket, recs := range map[string]map[string]string{"devices": devices, "regions": regions} {
			b, err := tx.CreateBucket([]byte(bucket))
			if err != nil {
				return err
			}
			for k, v := range recs {
				if err := b.Put([]byte(k), []byte(v)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// Ensure that operations recorded as plain strings by earlier versions
// ("snapshot-create NAME") load as typed Ops, and that a typed Op
// round-trips through the file.
func TestStore_opCompat(t *testing.T) {
	dir := t.TempDir()
	writeVersion1(t, dir, map[string]string{
		"vol":  `{"name":"vol","live":"0 8 zero \n","op":"snapshot-create s1"}`,
		"b":    `{"name":"b","op":"load"}`,
		"idle": `{"name":"idle","live":"0 8 zero \n"}`,
	}, map[string]string{
		"r": `{"name":"r","path":"/p","size":4096,"op":"remove"}`,
	})
	s := open(t, dir)
	for name, want := range map[string]state.Op{
		"vol":  {Verb: "snapshot-create", Arg: "s1"},
		"b":    {Verb: "load"},
		"idle": {},
	} {
		got, ok, err := s.Device(name)
		if err != nil || !ok || got.Op != want {
			t.Errorf("old record %s: Op %+v, %v, %v; want %+v", name, got.Op, ok, err, want)
		}
	}
	if r, ok, err := s.Region("r"); err != nil || !ok || r.Op != (state.Op{Verb: "remove"}) {
		t.Errorf("old region record: Op %+v, %v, %v; want remove", r.Op, ok, err)
	}
	op := state.Op{Verb: "snapshot-merge", Arg: "a b"} // an argument with a blank survives
	if err := s.PutDevice(state.Device{Name: "new", Op: op}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDevice(state.Device{Name: "none"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir)
	if got, _, err := s.Device("new"); err != nil || got.Op != op {
		t.Fatalf("new record: Op %+v, %v; want %+v", got.Op, err, op)
	}
	if got, _, err := s.Device("none"); err != nil || !got.Op.IsZero() {
		t.Fatalf("record without an op: Op %+v, %v; want none", got.Op, err)
	}
}
