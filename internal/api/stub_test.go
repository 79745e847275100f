package api

import "github.com/daxsnap/daxsnap/internal/wire"

// stubService accepts every request that has a JSON body and answers it
// with zero values; any other call panics (the embedded nil Service), so
// a test that reaches one by mistake says so. The recording fake that
// checks what reaches the service is apiclient's, across the socket.
type stubService struct{ Service }

func (stubService) PmemCreate(wire.PmemCreate) (wire.Pmem, error) { return wire.Pmem{}, nil }
func (stubService) Create(wire.DeviceCreate) (wire.Info, error)   { return wire.Info{}, nil }
func (stubService) Load(string, wire.Load) error                  { return nil }
func (stubService) Suspend(string, wire.Suspend) error            { return nil }
func (stubService) Resume(string) error                           { return nil }
func (stubService) Rename(string, wire.Rename) (wire.Info, error) { return wire.Info{}, nil }
func (stubService) Message(string, wire.Message) (wire.MessageReply, error) {
	return wire.MessageReply{}, nil
}
