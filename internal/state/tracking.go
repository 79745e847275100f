package state

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bucketTracking maps a snapshot's COW (as its table names it: the one
// thing about a snapshot a rename keeps) to the JSON of a Tracking. Files
// older than changed-block tracking lack the bucket; the open makes it
// (Store.init), as it does the others.
var bucketTracking = []byte("tracking")

// Tracking is what changed-block tracking keeps of one snapshot: who it
// is, and how many exceptions each older snapshot of the same origin had
// when it was activated (its marks). The exceptions themselves are in the
// COW devices; these counts cut them into "changed between A and B".
type Tracking struct {
	// COW is the snapshot's COW device as its table names it (the key).
	COW string `json:"cow"`
	// ID is unique to this snapshot (a COW path is reused after a
	// removal; an ID never is): marks name older snapshots by it.
	ID     string `json:"id"`
	Origin string `json:"origin"`
	// Created is when the snapshot was activated (or, for a snapshot
	// made before tracking, when a newer one first recorded it).
	Created time.Time `json:"created"`
	// Marks maps the ID of each older snapshot of the origin to the
	// number of exceptions it had when this one was activated. Nil: this
	// snapshot was not taken by a tracking `snapshot create` (adopted, or
	// recorded only as an older one), so nothing is known of what changed
	// before it.
	Marks map[string]int `json:"marks,omitempty"`
	// Transient is a store of type N, whose exceptions live only in the
	// daemon that recorded Run; after a restart they are gone.
	Transient bool   `json:"transient,omitempty"`
	Run       string `json:"run,omitempty"`
	// Written: a write reached the snapshot itself. Its own changes are
	// among its exceptions and no mark can tell them apart, so diffs
	// between it and another snapshot are refused.
	Written bool `json:"written,omitempty"`
}

// Tracking returns the record of the snapshot on COW cow.
func (s *Store) Tracking(cow string) (Tracking, bool, error) {
	return get[Tracking](s, bucketTracking, cow)
}

// PutTrackings stores recs in one transaction, durably.
func (s *Store) PutTrackings(recs ...Tracking) error {
	err := s.update(func(tx *bolt.Tx) error {
		for _, r := range recs {
			if err := putTx(tx, bucketTracking, r.COW, r); err != nil {
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

// DeleteTracking forgets the snapshot on COW cow (it was removed or
// merged).
func (s *Store) DeleteTracking(cow string) error { return s.del(bucketTracking, cow) }

func (t *Tracking) recordName() string { return t.COW }
