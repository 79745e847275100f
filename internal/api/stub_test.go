package api

import (
	"context"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// stubService accepts every request that has a JSON body and answers it
// with zero values; any other call panics (the embedded nil Service), so
// a test that reaches one by mistake says so. The recording fake that
// checks what reaches the service is apiclient's, across the socket.
type stubService struct{ Service }

func (stubService) PmemCreate(context.Context, wire.PmemCreate) (wire.Pmem, error) {
	return wire.Pmem{}, nil
}
func (stubService) Create(context.Context, wire.DeviceCreate) (wire.Info, error) {
	return wire.Info{}, nil
}
func (stubService) Load(context.Context, string, wire.Load) error       { return nil }
func (stubService) Suspend(context.Context, string, wire.Suspend) error { return nil }
func (stubService) Resume(context.Context, string) error                { return nil }
func (stubService) Rename(context.Context, string, wire.Rename) (wire.Info, error) {
	return wire.Info{}, nil
}
func (stubService) Message(context.Context, string, wire.Message) (wire.MessageReply, error) {
	return wire.MessageReply{}, nil
}
