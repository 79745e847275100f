package backing

import "errors"

// Options control how a backing device is opened.
type Options struct {
	ReadOnly bool
}

// Open opens the backing device at path (TODO: implemented by the backing work).
func Open(path string, opts Options) (Device, error) {
	return nil, errors.New("backing.Open: not implemented yet")
}
