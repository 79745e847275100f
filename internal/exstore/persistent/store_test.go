package persistent

import (
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/exstore/storetest"
)

func factory() storetest.Factory {
	return storetest.Factory{
		Open: func(dev backing.Device, chunk exstore.Sector) (exstore.Store, error) {
			return Open(dev, Options{ChunkSize: chunk})
		},
		Persistent:     true,
		Merge:          true,
		RecordsPerArea: func(chunk exstore.Sector) int { return int(chunk.Bytes() / recordSize) },
	}
}

func TestStore_Conformance(t *testing.T) {
	storetest.Run(t, factory())
}
