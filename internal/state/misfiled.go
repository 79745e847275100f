package state

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Misfiled is a record whose name is not the key it is stored under.
type Misfiled struct {
	Kind string // "device" or "region"
	Key  string // the name it is stored under
	Name string // the name the record gives
}

// Misfiled lists the records whose name differs from their key. The
// other readers (Devices, Regions, Device, Region) pass them over, so
// that such a record never creates the device or region it names: the
// daemon reports them at start, and they stay in the file to be looked
// at (the next change of that key replaces the record).
func (s *Store) Misfiled() ([]Misfiled, error) {
	var out []Misfiled
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, kb := range []struct {
			kind   string
			bucket []byte
		}{{"region", bucketRegions}, {"device", bucketDevices}} {
			kind, bucket := kb.kind, kb.bucket
			err := tx.Bucket(bucket).ForEach(func(k, v []byte) error {
				var rec struct {
					Name string `json:"name"`
				}
				if err := json.Unmarshal(v, &rec); err != nil {
					return fmt.Errorf("record %s/%s: %w", bucket, k, err)
				}
				if rec.Name != string(k) {
					out = append(out, Misfiled{Kind: kind, Key: string(k), Name: rec.Name})
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read state file %s: %w", s.path, err)
	}
	return out, nil
}
