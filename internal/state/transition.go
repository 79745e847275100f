package state

import (
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// opSetter is a record with an in-flight operation field.
type opSetter interface{ setOp(Op) }

// Regions returns every region record, sorted by name.
func (s *Store) Regions() ([]Region, error) { return list[Region](s, bucketRegions) }

// Devices returns every device record, sorted by name.
func (s *Store) Devices() ([]Device, error) { return list[Device](s, bucketDevices) }

// Region returns the record of region name.
func (s *Store) Region(name string) (Region, bool, error) { return get[Region](s, bucketRegions, name) }

// Device returns the record of device name.
func (s *Store) Device(name string) (Device, bool, error) { return get[Device](s, bucketDevices, name) }

// PutDevice stores d under d.Name, outside any transition (start-up repair).
func (s *Store) PutDevice(d Device) error { return s.put(bucketDevices, d.Name, d) }

// PutRegion stores r under r.Name, outside any transition (start-up repair).
func (s *Store) PutRegion(r Region) error { return s.put(bucketRegions, r.Name, r) }

// DeleteDevice drops the record of device name.
func (s *Store) DeleteDevice(name string) error { return s.del(bucketDevices, name) }

// DeleteRegion drops the record of region name.
func (s *Store) DeleteRegion(name string) error { return s.del(bucketRegions, name) }

// ReplaceDevices drops the records named in drop and stores recs, in one
// transaction: a rename of several devices, and the records of the
// devices whose tables name them, change together or not at all.
func (s *Store) ReplaceDevices(drop []string, recs []Device) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range drop {
			if err := tx.Bucket(bucketDevices).Delete([]byte(name)); err != nil {
				return err
			}
		}
		for i := range recs {
			if err := putTx(tx, bucketDevices, recs[i].Name, &recs[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write state file %s: %w", s.path, err)
	}
	return nil
}

// DeviceTransition records op in flight on device name (creating a bare
// record if there is none), runs fn, and then stores outcome() in one
// transaction: nil deletes the record; a record with another name
// replaces this one (rename). outcome runs whether fn failed or not, so it
// records what really happened. It returns fn's error, joined with any
// error writing the state.
func (s *Store) DeviceTransition(name string, op Op, fn func() error, outcome func() *Device) error {
	return transition(s, bucketDevices, name, op, &Device{Name: name}, fn,
		func() (string, any) {
			d := outcome()
			if d == nil {
				return "", nil
			}
			d.Op = Op{}
			return d.Name, d
		})
}

// RegionTransition is DeviceTransition for region records.
func (s *Store) RegionTransition(name string, op Op, fresh Region, fn func() error, outcome func() *Region) error {
	return transition(s, bucketRegions, name, op, &fresh, fn,
		func() (string, any) {
			r := outcome()
			if r == nil {
				return "", nil
			}
			r.Op = Op{}
			return r.Name, r
		})
}

// transition is containerd's devmapper transition: record the trying
// state, run, record the result.
func transition[T any, PT interface {
	*T
	opSetter
}](s *Store, bucket []byte, name string, op Op, fresh PT, fn func() error, outcome func() (string, any)) error {
	begin := func(tx *bolt.Tx) error {
		rec, ok, err := getTx[T](tx, bucket, name)
		if err != nil {
			return err
		}
		if !ok {
			rec = *fresh
		}
		PT(&rec).setOp(op)
		return putTx(tx, bucket, name, &rec)
	}
	if err := s.update(begin); err != nil {
		return fmt.Errorf("%s %s: record the operation in %s: %w", op, name, s.path, err)
	}
	err := fn()
	end := func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucket).Delete([]byte(name)); err != nil {
			return err
		}
		key, rec := outcome()
		if rec == nil {
			return nil
		}
		return putTx(tx, bucket, key, rec)
	}
	if serr := s.update(end); serr != nil {
		err = errors.Join(err, fmt.Errorf("%s %s: record the outcome in %s: %w", op, name, s.path, serr))
	}
	return err
}

func list[T any](s *Store, bucket []byte) ([]T, error) {
	var out []T
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var rec T
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("record %s/%s: %w", bucket, k, err)
			}
			if misfiled(&rec, k) {
				return nil
			}
			out = append(out, rec)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read state file %s: %w", s.path, err)
	}
	return out, nil
}

func get[T any](s *Store, bucket []byte, name string) (rec T, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		rec, ok, err = getTx[T](tx, bucket, name)
		return err
	})
	if err != nil {
		err = fmt.Errorf("read state file %s: %w", s.path, err)
	}
	return rec, ok, err
}

func getTx[T any](tx *bolt.Tx, bucket []byte, name string) (T, bool, error) {
	var rec T
	v := tx.Bucket(bucket).Get([]byte(name))
	if v == nil {
		return rec, false, nil
	}
	if err := json.Unmarshal(v, &rec); err != nil {
		return rec, false, fmt.Errorf("record %s/%s: %w", bucket, name, err)
	}
	if misfiled(&rec, []byte(name)) {
		var zero T
		return zero, false, nil
	}
	return rec, true, nil
}

func putTx(tx *bolt.Tx, bucket []byte, name string, rec any) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("record %s/%s: %w", bucket, name, err)
	}
	return tx.Bucket(bucket).Put([]byte(name), v)
}

func (s *Store) put(bucket []byte, name string, rec any) error {
	err := s.update(func(tx *bolt.Tx) error { return putTx(tx, bucket, name, rec) })
	if err != nil {
		return fmt.Errorf("write state file %s: %w", s.path, err)
	}
	return nil
}

func (s *Store) del(bucket []byte, name string) error {
	err := s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete([]byte(name)) })
	if err != nil {
		return fmt.Errorf("write state file %s: %w", s.path, err)
	}
	return nil
}
