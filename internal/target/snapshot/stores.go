package snapshot

import (
	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/exstore/persistent"
	"github.com/daxsnap/daxsnap/internal/exstore/transient"
)

func openPersistent(cow backing.Device, chunk exstore.Sector, originLBS int, overflow bool) (exstore.Store, error) {
	return persistent.Open(cow, persistent.Options{ChunkSize: chunk, Overflow: overflow, OriginLogicalBlockSize: originLBS})
}

func openTransient(cow backing.Device, chunk exstore.Sector, originLBS int) (exstore.Store, error) {
	return transient.New(cow, transient.Options{ChunkSize: chunk, OriginLogicalBlockSize: originLBS})
}
