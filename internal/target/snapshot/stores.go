package snapshot

import (
	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/exstore/persistent"
	"github.com/daxsnap/daxsnap/internal/exstore/transient"
)

// openPersistent opens a persistent store of type P or PO.
func openPersistent(cow backing.Device, chunk exstore.Sector, originLBS int, typ exstore.StoreType) (exstore.Store, error) {
	return persistent.Open(cow, persistent.Options{ChunkSize: chunk, Overflow: typ == exstore.PersistentOverflow, OriginLogicalBlockSize: originLBS})
}

func openTransient(cow backing.Device, chunk exstore.Sector, originLBS int) (exstore.Store, error) {
	return transient.New(cow, transient.Options{ChunkSize: chunk, OriginLogicalBlockSize: originLBS})
}
