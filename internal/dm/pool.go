package dm

import (
	"errors"
	"fmt"
	"sync"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// DevicePool opens backing devices once and shares them between every
// table line and every table that names them, so that all users of one
// file see one mapping (the kernel's dm_dev refcounts). It is safe for
// concurrent use.
type DevicePool struct {
	// Opener opens a device by name, as backing.Open does (nil means
	// backing.Open); the pool's options say only ReadOnly. The daemon
	// sets it to resolve names of its own (pmem regions). Mapped devices
	// (/dev/mapper/NAME, /dev/dm-N) are the pool's Manager's to open.
	Opener func(name string, opts backing.Options) (backing.Device, error)

	mu     sync.Mutex
	stack  *Manager // opens /dev/mapper/NAME and /dev/dm-N (see Manager.Open)
	open   map[poolKey]*pooled
	byDv   map[backing.Device]poolKey
	shared map[any]any // see CtorContext.Shared
}

type poolKey struct {
	id       backing.ID
	readOnly bool
}

type pooled struct {
	dev  backing.Device
	refs int
}

// NewDevicePool returns a pool that opens devices with opener (nil: backing.Open).
func NewDevicePool(opener func(name string, opts backing.Options) (backing.Device, error)) *DevicePool {
	return &DevicePool{Opener: opener, open: make(map[poolKey]*pooled), byDv: make(map[backing.Device]poolKey)}
}

// Get opens name with opts or shares an open device with the same
// identity and opts.ReadOnly.
func (p *DevicePool) Get(name string, opts backing.Options) (backing.Device, error) {
	p.mu.Lock()
	opener, stack := p.Opener, p.stack
	p.mu.Unlock()
	if stack != nil && IsStackRef(name) {
		opener = stack.Open
	}
	if opener == nil {
		opener = backing.Open
	}
	dev, err := opener(name, opts)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	key := poolKey{dev.ID(), opts.ReadOnly}
	if e, ok := p.open[key]; ok {
		if e.dev != dev {
			dev.Close()
			// A table being loaded sees the device as it is now: a file
			// or block device may have grown since it was first opened.
			if r, ok := e.dev.(backing.Reprober); ok {
				if err := r.Reprobe(); err != nil {
					return nil, err
				}
			}
		}
		e.refs++
		return e.dev, nil
	}
	p.open[key] = &pooled{dev: dev, refs: 1}
	p.byDv[dev] = key
	return dev, nil
}

// Put releases one reference taken by Get; the last one closes the device.
func (p *DevicePool) Put(dev backing.Device) error {
	p.mu.Lock()
	key, ok := p.byDv[dev]
	if !ok {
		p.mu.Unlock()
		return errors.New("dm: device pool: put of a device it does not hold")
	}
	e := p.open[key]
	e.refs--
	if e.refs > 0 {
		p.mu.Unlock()
		return nil
	}
	delete(p.open, key)
	delete(p.byDv, dev)
	p.mu.Unlock()
	if err := dev.Close(); err != nil {
		return fmt.Errorf("close %s: %w", dev.Path(), err)
	}
	return nil
}

// Len reports how many distinct devices are open (for tests and status).
func (p *DevicePool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.open)
}

// sharedValue returns the value under key, creating it with create on first use.
func (p *DevicePool) sharedValue(key any, create func() any) any {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v, ok := p.shared[key]; ok {
		return v
	}
	if p.shared == nil {
		p.shared = make(map[any]any)
	}
	v := create()
	p.shared[key] = v
	return v
}
