package daemon

// ProtectMappings runs the sessions' protection sweep on device name, as
// snapshot creation must once the snapshot is active.
func ProtectMappings(d *Daemon, name string) error {
	dev, err := d.mgr.Get(name)
	if err != nil {
		return err
	}
	return d.protectMappings(dev)
}

// BeginSnapshotCut starts the consistent cut of device name's mappings.
func BeginSnapshotCut(d *Daemon, name string) (func() error, error) {
	dev, err := d.mgr.Get(name)
	if err != nil {
		return nil, err
	}
	return d.beginSnapshotCut(dev), nil
}
