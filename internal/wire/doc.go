// Package wire holds the request and response bodies of daxsnap's control
// API (HTTP/JSON on <state>/daxsnap.sock), shared by the server (internal/api)
// and its clients (the CLI). It has no behaviour: only types, JSON field
// names and the error codes, so that both sides agree by construction.
//
// Routes (all under /v1, see internal/api):
//
//	GET    /v1/version                      Version
//	GET    /v1/targets                      []Target
//	GET    /v1/pmem                         []Pmem
//	POST   /v1/pmem                         PmemCreate -> Pmem
//	GET    /v1/pmem/{name}                  Pmem
//	DELETE /v1/pmem/{name}
//	GET    /v1/devices                      []Info
//	POST   /v1/devices                      DeviceCreate -> Info
//	GET    /v1/devices/{name}               Info
//	DELETE /v1/devices/{name}?force=&deferred=
//	POST   /v1/devices/{name}/load          Load
//	POST   /v1/devices/{name}/suspend       Suspend
//	POST   /v1/devices/{name}/resume
//	POST   /v1/devices/{name}/clear
//	POST   /v1/devices/{name}/wipe_table
//	POST   /v1/devices/{name}/rename        Rename -> Info
//	POST   /v1/devices/{name}/message       Message -> MessageReply
//	GET    /v1/devices/{name}/table?inactive=   Text
//	GET    /v1/devices/{name}/status?inactive=  Text
//	GET    /v1/devices/{name}/data?offset=&length=   raw bytes
//	PUT    /v1/devices/{name}/data?offset=           raw bytes (written, then flushed)
//	GET    /v1/snapshots?origin=            []Snapshot
//	POST   /v1/snapshots                    SnapshotCreate -> Snapshot
//	GET    /v1/snapshots/{name}             Snapshot
//	DELETE /v1/snapshots/{name}
//	POST   /v1/snapshots/{name}/extend      SnapshotExtend -> Snapshot
//	POST   /v1/snapshots/{name}/merge       SnapshotMerge -> Snapshot (State merged unless no_wait)
//	GET    /metrics                         Prometheus text format
//
// Every error is an ErrorBody with one of the Code constants.
package wire
