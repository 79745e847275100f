// Package all is the one list of target types daxsnap offers.
package all

import (
	"github.com/daxsnap/daxsnap/internal/dm"
	errortarget "github.com/daxsnap/daxsnap/internal/target/error"
	"github.com/daxsnap/daxsnap/internal/target/linear"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
	"github.com/daxsnap/daxsnap/internal/target/striped"
	"github.com/daxsnap/daxsnap/internal/target/zero"
)

// Types lists every target type, in the order Register adds them.
func Types() []*dm.TargetType {
	return []*dm.TargetType{
		errortarget.Type,
		linear.Type,
		snapshot.OriginType,
		snapshot.SnapshotType,
		snapshot.MergeType,
		striped.Type,
		zero.Type,
	}
}

// Register adds every target type to r.
func Register(r *dm.Registry) {
	for _, tt := range Types() {
		r.Register(tt)
	}
}
