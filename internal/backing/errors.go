package backing

import "errors"

// Errors returned by every Device, wrapped with the path, offset and length.
var (
	// ErrClosed is returned by an operation on a device after Close.
	ErrClosed = errors.New("backing device is closed")
	// ErrOutOfRange is returned for an offset or length outside the device.
	ErrOutOfRange = errors.New("range outside the device")
)

// Errors returned by Open.
var (
	// ErrUnsupported is returned when the path is not something daxsnap can
	// use as a backing device (a directory, a fifo, a character device that
	// is not device-dax...).
	ErrUnsupported = errors.New("not a kind of backing device daxsnap accepts")
)
