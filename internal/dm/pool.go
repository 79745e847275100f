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
	// backing.Open); the pool's options say only ReadOnly and GrowLimit.
	// The daemon sets it to resolve names of its own (pmem regions). Mapped devices
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
	// owners counts the references by the device whose table took them
	// (nil: a table built outside a device). A mapped device opened by the
	// tables of two devices counts two opens, as the kernel's does (each
	// mapped_device gets its own reference to a device it stacks on, which
	// its live and inactive tables share): the first owner's is the open
	// Manager.Open took, each further owner adds one (see get).
	owners map[any]int
}

// NewDevicePool returns a pool that opens devices with opener (nil: backing.Open).
func NewDevicePool(opener func(name string, opts backing.Options) (backing.Device, error)) *DevicePool {
	return &DevicePool{Opener: opener, open: make(map[poolKey]*pooled), byDv: make(map[backing.Device]poolKey)}
}

// get opens name with opts for a table of owner (nil for none), or
// shares an open device with the same identity and opts.ReadOnly.
func (p *DevicePool) get(name string, opts backing.Options, owner any) (backing.Device, error) {
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
	key := poolKey{dev.ID(), opts.ReadOnly}
	e, ok := p.open[key]
	if !ok {
		p.open[key] = &pooled{dev: dev, refs: 1, owners: map[any]int{owner: 1}}
		p.byDv[dev] = key
		p.mu.Unlock()
		return dev, nil
	}
	if e.dev != dev {
		// A table being loaded sees the device as it is now: a file
		// or block device may have grown since it was first opened.
		if r, ok := e.dev.(backing.Reprober); ok {
			if err := r.Reprobe(); err != nil {
				p.mu.Unlock()
				dev.Close()
				return nil, err
			}
		}
		if s, ok := dev.(*stacked); ok && e.owners[owner] == 0 {
			// Another device's table: the open Manager.Open took for
			// this one stays, one more open of the mapped device.
			s.closed.Store(true)
		} else {
			// Closed outside p.mu: the last close of a mapped device
			// takes its lock, under which its own tables put theirs.
			defer dev.Close()
		}
	}
	e.refs++
	e.owners[owner]++
	p.mu.Unlock()
	return e.dev, nil
}

// put releases one reference get took for owner; the last one closes
// the device.
func (p *DevicePool) put(dev backing.Device, owner any) error {
	p.mu.Lock()
	key, ok := p.byDv[dev]
	if !ok || p.open[key].owners[owner] == 0 {
		p.mu.Unlock()
		return errors.New("dm: device pool: put of a device it does not hold")
	}
	e := p.open[key]
	e.refs--
	if e.owners[owner]--; e.owners[owner] == 0 {
		delete(e.owners, owner)
	}
	if e.refs > 0 {
		p.mu.Unlock()
		if s, ok := dev.(*stacked); ok && e.owners[owner] == 0 {
			// That device's tables let go; others still hold it. Outside
			// p.mu: a last close may remove the device (deferred).
			return s.dev.CloseBy(Holder{Kind: HolderTable})
		}
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
