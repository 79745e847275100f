// Package api is daxsnap's control API: HTTP/JSON over the daemon's unix
// socket, one resource per concept (/v1/pmem, /v1/devices, /v1/targets,
// /v1/version; see package wire for the routes and bodies), served over
// the Service interface: DeviceService, SnapshotService, PmemService and
// SessionService, one per resource. The daemon implements them in
// process; package apiclient implements them across the socket, and
// package apitest is the conformance suite both pass.
//
// Errors travel as wire.ErrorBody: the error class (dm's sentinel errors)
// becomes a code and an HTTP status in one place (classify), and the
// client maps codes back (Error), so errors.Is(err, dm.ErrBusy) works on
// both sides.
//
// Authorization uses the peer's credentials (SO_PEERCRED): anyone who can
// connect may read; only root or the daemon's own uid may change anything.
package api
