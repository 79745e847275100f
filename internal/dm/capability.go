package dm

import "fmt"

// checkCapabilities enforces the capability rule: once a device has dax or
// sync (fixed by its first load, or gained by a later table going live), no
// table that lacks it may be loaded. ctl must be held.
func (d *Device) checkCapabilities(t *Table) error {
	if !d.capsFixed {
		return nil
	}
	for _, c := range []struct {
		bit  Capability
		name string
		what string
	}{
		{DAX, "DAX-capable", "DAX-incapable"},
		{Sync, "sync-capable (MAP_SYNC)", "sync-incapable"},
	} {
		if !d.caps.Has(c.bit) {
			continue
		}
		if l, why, ok := t.lacking(c.bit); ok {
			return &TableError{Line: l.Line, Target: l.Type, Err: ErrDAXChange,
				Reason: fmt.Sprintf("%s is %s; this table would make it %s because %s", d.Name(), c.name, c.what, why),
				Hint:   fmt.Sprintf("programs may have it mapped, so it must stay that way: remove and recreate %s when nothing has it open", d.Name())}
		}
	}
	return nil
}
