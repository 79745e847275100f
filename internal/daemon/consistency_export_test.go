package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/pmem"
	"github.com/daxsnap/daxsnap/internal/state"
)

// CheckConsistency (for tests, between requests) says what does not hold
// together: a device whose state record is missing or differs from what
// the daemon would record now, a record with no device or with an
// operation still in flight, a name the name rules refuse, a region whose
// record or file does not check.
func CheckConsistency(d *Daemon) error {
	var errs []error
	recs, err := d.store.Devices()
	if err != nil {
		return err
	}
	stored := map[string]state.Device{}
	for _, r := range recs {
		if !r.Op.IsZero() {
			errs = append(errs, fmt.Errorf("record of device %q has operation %q in flight", r.Name, r.Op))
		}
		stored[r.Name] = r
	}
	for _, dev := range d.mgr.List() {
		name := dev.Name()
		if bad := dm.BadNameChar(name); bad != "" {
			errs = append(errs, fmt.Errorf("device %q: its name contains %s", name, bad))
		}
		want := d.record(dev)
		if want == nil {
			continue
		}
		got, ok := stored[name]
		if !ok {
			errs = append(errs, fmt.Errorf("device %q has no record", name))
			continue
		}
		delete(stored, name)
		if !reflect.DeepEqual(got, *want) {
			errs = append(errs, fmt.Errorf("device %q: record %+v, the daemon has %+v", name, got, *want))
		}
	}
	for name := range stored {
		errs = append(errs, fmt.Errorf("record of device %q, which does not exist", name))
	}
	regions, err := d.store.Regions()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, r := range regions {
		switch {
		case !r.Op.IsZero():
			errs = append(errs, fmt.Errorf("record of region %q has operation %q in flight", r.Name, r.Op))
		case dm.BadNameChar(r.Name) != "":
			errs = append(errs, fmt.Errorf("region %q: its name contains %s", r.Name, dm.BadNameChar(r.Name)))
		}
		if err := pmem.CheckFile(r); err != nil {
			errs = append(errs, fmt.Errorf("region %q: %w", r.Name, err))
		}
	}
	return errors.Join(errs...)
}

// StateFingerprint (for tests) is what the state file records, as text:
// equal fingerprints, equal devices and regions.
func StateFingerprint(d *Daemon) (string, error) {
	devs, err := d.store.Devices()
	if err != nil {
		return "", err
	}
	regions, err := d.store.Regions()
	if err != nil {
		return "", err
	}
	js, err := json.Marshal([]any{devs, regions})
	return string(js), err
}
