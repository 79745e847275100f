package api

import (
	"context"
	"fmt"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Service is the whole API: the daemon's version and target types, and
// one service per resource. The daemon implements it; so does
// apiclient.Client, across the socket. Errors carry dm's error classes.
type Service interface {
	Version(ctx context.Context) (wire.Version, error)
	Targets(ctx context.Context) ([]wire.Target, error)

	DeviceService
	SnapshotService
	PmemService
	SessionService
	CheckpointService
}

// DeviceService is the verbs on mapped devices (/v1/devices), as dmsetup
// has them, and block I/O on a device.
type DeviceService interface {
	Devices(ctx context.Context) ([]wire.Info, error)
	Create(ctx context.Context, req wire.DeviceCreate) (wire.Info, error)
	Info(ctx context.Context, name string) (wire.Info, error)
	Load(ctx context.Context, name string, req wire.Load) error
	Suspend(ctx context.Context, name string, req wire.Suspend) error
	Resume(ctx context.Context, name string) error
	Clear(ctx context.Context, name string) error
	WipeTable(ctx context.Context, name string) error
	Remove(ctx context.Context, name string, req wire.Remove) error
	Rename(ctx context.Context, name string, req wire.Rename) (wire.Info, error)
	Message(ctx context.Context, name string, req wire.Message) (wire.MessageReply, error)
	Table(ctx context.Context, name string, inactive bool) (wire.Text, error)
	Status(ctx context.Context, name string, inactive bool) (wire.Text, error)

	// ReadData and WriteData are block I/O on a device, for tools and
	// tests without an NBD client; WriteData flushes before returning.
	ReadData(ctx context.Context, name string, off, n int64) ([]byte, error)
	WriteData(ctx context.Context, name string, off int64, p []byte) error
}

// SnapshotService is LVM-like snapshot management (/v1/snapshots).
type SnapshotService interface {
	// Snapshots lists the snapshots (of origin, unless it is "").
	Snapshots(ctx context.Context, origin string) ([]wire.Snapshot, error)
	Snapshot(ctx context.Context, name string) (wire.Snapshot, error)
	SnapshotCreate(ctx context.Context, req wire.SnapshotCreate) (wire.Snapshot, error)
	SnapshotRemove(ctx context.Context, name string) error
	// SnapshotExtend grows a snapshot's COW (lvextend).
	SnapshotExtend(ctx context.Context, name string, req wire.SnapshotExtend) (wire.Snapshot, error)
	// SnapshotMerge merges a snapshot into its origin; unless req.NoWait
	// it returns when the merge has finished (State merged).
	SnapshotMerge(ctx context.Context, name string, req wire.SnapshotMerge) (wire.Snapshot, error)
}

// PmemService manages the memory regions devices are built on (/v1/pmem).
type PmemService interface {
	PmemList(ctx context.Context) ([]wire.Pmem, error)
	PmemGet(ctx context.Context, name string) (wire.Pmem, error)
	PmemCreate(ctx context.Context, req wire.PmemCreate) (wire.Pmem, error)
	PmemRemove(ctx context.Context, name string) error
}

// SessionService reports the clients that map devices directly
// (/v1/sessions).
type SessionService interface {
	// Sessions lists the clients that map devices directly, with the
	// write-protect audit's findings.
	Sessions(ctx context.Context) ([]wire.DAXSession, error)
}

// CheckpointService makes memory volumes durable
// (/v1/devices/{name}/checkpoint, wire/checkpoint.go).
type CheckpointService interface {
	// CheckpointGet says how durable the device is.
	CheckpointGet(ctx context.Context, name string) (wire.Durability, error)
	// CheckpointEnable starts checkpointing the device to an image; the
	// first checkpoint is full.
	CheckpointEnable(ctx context.Context, name string, req wire.CheckpointEnable) (wire.Durability, error)
	// CheckpointNow takes a checkpoint and returns once it is durable.
	CheckpointNow(ctx context.Context, name string) (wire.Durability, error)
	// CheckpointDisable stops checkpointing; the image stays as it is.
	CheckpointDisable(ctx context.Context, name string) error
}

// MaxDataLength bounds one ReadData or WriteData request, as NBD clients
// bound their payloads.
const MaxDataLength = 32 << 20

// CheckData refuses, with dm.ErrInvalidArgument, what no ReadData or
// WriteData of n bytes at off may ask: a negative offset or length, or
// more than MaxDataLength bytes. The server checks it before calling the
// service; a service checks it too, for callers in process.
func CheckData(op, name string, off, n int64) error {
	switch {
	case off < 0:
		return fmt.Errorf("%w: %s %s: offset %d: want a byte offset ≥ 0", dm.ErrInvalidArgument, op, name, off)
	case n < 0:
		return fmt.Errorf("%w: %s %s: length %d: want a byte count ≥ 0", dm.ErrInvalidArgument, op, name, n)
	case n > MaxDataLength:
		return fmt.Errorf("%w: %s %s: length %d exceeds %d bytes per request: %s in pieces", dm.ErrInvalidArgument, op, name, n, MaxDataLength, op)
	}
	return nil
}
