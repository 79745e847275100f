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

// cowGrowLimit is as large as the COW of a snapshot of originBytes can
// usefully grow: a copy of every origin chunk, with a persistent store's
// header and metadata (snapshot extend grows it no further), for the
// table's chunk size and the default one (which a table without one
// gets). The COW is opened with room for it, so that a COW in memory can
// be extended too.
func cowGrowLimit(originBytes int64, typ exstore.StoreType, chunk exstore.Sector) int64 {
	full := func(chunk exstore.Sector) int64 {
		if !typ.IsPersistent() {
			cb := chunk.Bytes()
			return (originBytes + cb - 1) / cb * cb
		}
		return persistent.NewGeometry(chunk).FullSize(originBytes)
	}
	limit := full(exstore.DefaultChunkSize)
	if chunk != 0 {
		limit = max(limit, full(chunk))
	}
	return limit
}
