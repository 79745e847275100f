// Package api is daxsnap's control API: HTTP/JSON over the daemon's unix
// socket, one resource per concept (/v1/pmem, /v1/devices, /v1/targets,
// /v1/version; see package wire for the routes and bodies), served over a
// narrow Service interface that the daemon implements and that Client
// implements across the socket.
//
// Errors travel as wire.ErrorBody: the error class (dm's sentinel errors)
// becomes a code and an HTTP status in one place (classify), and Client
// maps codes back, so errors.Is(err, dm.ErrBusy) works on both sides.
//
// Authorization uses the peer's credentials (SO_PEERCRED): anyone who can
// connect may read; only root or the daemon's own uid may change anything.
package api
