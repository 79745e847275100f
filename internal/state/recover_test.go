package state_test

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/state"
)

// seeded makes a state directory with a few records and returns the
// state file's bytes.
func seeded(t *testing.T) (dir string, data []byte) {
	t.Helper()
	dir = t.TempDir()
	s, err := state.Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c"} {
		if err := s.PutDevice(state.Device{Name: name, Live: "0 8 zero \n"}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	data, err = os.ReadFile(filepath.Join(dir, state.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return dir, data
}

// damages are the ways a state file was found broken: truncated at the
// places bbolt reads first (its header, its freelist, its pages), and
// overwritten with garbage.
func damages(data []byte) map[string][]byte {
	ps := 4096
	r := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, len(data))
	for i := range garbage {
		garbage[i] = byte(r.Uint32())
	}
	metaGarbage := append([]byte(nil), data...)
	for i := 16; i < 2*ps; i++ {
		metaGarbage[i] = byte(r.Uint32())
	}
	pagesGarbage := append([]byte(nil), data...)
	for i := 2 * ps; i < len(pagesGarbage); i++ {
		pagesGarbage[i] = byte(r.Uint32())
	}
	return map[string][]byte{
		"truncated to 100 bytes":    data[:100],
		"truncated to one page":     data[:ps],
		"truncated to two pages":    data[:2*ps],
		"truncated to 3.5 pages":    data[:3*ps+ps/2],
		"truncated to half":         data[:len(data)/2],
		"truncated to five pages":   data[:5*ps],
		"garbage":                   garbage,
		"garbage in the headers":    metaGarbage,
		"garbage after the headers": pagesGarbage,
	}
}

// Ensure that a truncated or garbage state file is refused with an error
// that says what to do, never opened (it crashed the process: SIGBUS in
// bbolt's freelist, or a panic), and that --recover goes back to the
// backup of the last good state, keeping the damaged file aside.
func TestOpen_damaged(t *testing.T) {
	_, good := seeded(t)
	for name, bad := range damages(good) {
		t.Run(name, func(t *testing.T) {
			dir, _ := seeded(t)
			path := filepath.Join(dir, state.FileName)
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := state.Open(dir, 0)
			if !errors.Is(err, state.ErrDamaged) {
				t.Fatalf("Open of a state file %s: %v, want ErrDamaged", name, err)
			}
			for _, want := range []string{path, "--recover", path + state.BackupSuffix} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			s, err := state.OpenOptions(dir, state.Options{Recover: true})
			if err != nil {
				t.Fatalf("Open with Recover: %v", err)
			}
			defer s.Close()
			if devs, err := s.Devices(); err != nil || len(devs) != 3 {
				t.Fatalf("devices after recovery: %+v, %v; want a, b, c", devs, err)
			}
			aside, _ := filepath.Glob(path + ".damaged-*")
			if len(aside) != 1 {
				t.Fatalf("damaged files kept: %v, want one", aside)
			}
			if kept, _ := os.ReadFile(aside[0]); string(kept) != string(bad) {
				t.Errorf("%s does not hold the damaged file", aside[0])
			}
		})
	}
}

// Ensure that a damaged state file with no usable backup is refused with
// the way out (start with no devices, cow adopt), not opened.
func TestOpen_damagedNoBackup(t *testing.T) {
	dir, data := seeded(t)
	path := filepath.Join(dir, state.FileName)
	os.Remove(path + state.BackupSuffix)
	os.WriteFile(path, data[:4096+100], 0o600)
	for _, recover := range []bool{false, true} {
		_, err := state.OpenOptions(dir, state.Options{Recover: recover})
		if !errors.Is(err, state.ErrDamaged) || !strings.Contains(err.Error(), "no usable backup") || !strings.Contains(err.Error(), "cow adopt") {
			t.Fatalf("Open (recover %v): %v, want ErrDamaged naming the way out", recover, err)
		}
	}
}

// Ensure that a missing or empty state file whose backup exists is not
// taken for a new state directory (that would lose every device), and
// that --recover brings the devices back.
func TestOpen_missingWithBackup(t *testing.T) {
	for _, how := range []string{"missing", "empty"} {
		t.Run(how, func(t *testing.T) {
			dir, _ := seeded(t)
			path := filepath.Join(dir, state.FileName)
			if how == "missing" {
				os.Remove(path)
			} else {
				os.WriteFile(path, nil, 0o600)
			}
			_, err := state.Open(dir, 0)
			if !errors.Is(err, state.ErrDamaged) || !strings.Contains(err.Error(), "--recover") {
				t.Fatalf("Open: %v, want ErrDamaged pointing to --recover", err)
			}
			s, err := state.OpenOptions(dir, state.Options{Recover: true})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if devs, _ := s.Devices(); len(devs) != 3 {
				t.Fatalf("devices after recovery: %+v", devs)
			}
		})
	}
}

// Ensure that the backup follows every committed change: the backup
// alone holds the last record put and not the one deleted.
func TestStore_backupFollowsChanges(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	s.PutDevice(state.Device{Name: "a", Live: "0 8 zero \n"})
	s.PutDevice(state.Device{Name: "b", Live: "0 8 zero \n"})
	s.DeleteDevice("a")
	err := s.DeviceTransition("c", state.Op{Verb: "create"}, func() error { return nil }, func() *state.Device {
		return &state.Device{Name: "c", Live: "0 8 zero \n"}
	})
	if err != nil {
		t.Fatal(err)
	}
	bak, err := os.ReadFile(filepath.Join(dir, state.FileName+state.BackupSuffix))
	if err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, state.FileName), bak, 0o600)
	b := open(t, other)
	devs, err := b.Devices()
	if err != nil || len(devs) != 2 || devs[0].Name != "b" || devs[1].Name != "c" || !devs[1].Op.IsZero() {
		t.Fatalf("backup holds %+v, %v; want b and c", devs, err)
	}
}
