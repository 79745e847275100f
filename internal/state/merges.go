package state

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Merge is a snapshot merge that finished. The snapshot is gone then, so
// this record is what lets a later `snapshot merge NAME` (a client that
// started it with --no-wait and now waits) say it finished, and when.
type Merge struct {
	Snapshot   string    `json:"snapshot"`
	Origin     string    `json:"origin"`
	FinishedAt time.Time `json:"finished_at"`
}

// KeepMerges is how many finished merges the state file remembers; a
// newer one pushes the oldest out.
const KeepMerges = 64

// PutMerge records m under m.Snapshot, dropping the oldest records
// beyond KeepMerges.
func (s *Store) PutMerge(m Merge) error {
	err := s.update(func(tx *bolt.Tx) error {
		if err := putTx(tx, bucketMerges, m.Snapshot, m); err != nil {
			return err
		}
		b := tx.Bucket(bucketMerges)
		var all []Merge
		err := b.ForEach(func(k, v []byte) error {
			var rec Merge
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("record %s/%s: %w", bucketMerges, k, err)
			}
			all = append(all, rec)
			return nil
		})
		if err != nil || len(all) <= KeepMerges {
			return err
		}
		sort.Slice(all, func(i, j int) bool { return all[i].FinishedAt.Before(all[j].FinishedAt) })
		for _, old := range all[:len(all)-KeepMerges] {
			if err := b.Delete([]byte(old.Snapshot)); err != nil {
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

// Merge returns the record of the finished merge of snapshot name.
func (s *Store) Merge(name string) (Merge, bool, error) { return get[Merge](s, bucketMerges, name) }

// DeleteMerge forgets the finished merge of snapshot name (a new device
// takes the name).
func (s *Store) DeleteMerge(name string) error { return s.del(bucketMerges, name) }
