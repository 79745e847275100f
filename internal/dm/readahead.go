package dm

// The read-ahead dmsetup info shows ("Read Ahead: 256") is the kernel's
// default for a device whose table asks for nothing more: the block
// layer makes it twice the optimal I/O size, at least 128 KiB
// (disk_update_readahead: max(io_opt * 2, VM_READAHEAD_PAGES)). A
// device's optimal I/O size is what its table's targets hint (IOHinter:
// striped's chunk × stripes), else what the mapped devices they stack on
// have, combined as the kernel's blk_stack_limits does: the least common
// multiple.

// defaultReadAhead is VM_READAHEAD_PAGES (128 KiB) in sectors.
const defaultReadAhead = 128 << 10 / SectorSize

// ReadAhead returns the device's read-ahead in sectors; 0 without a
// live table (dmsetup prints no Read Ahead line then).
func (d *Device) ReadAhead() uint64 {
	opt, ok := d.ioOpt()
	if !ok {
		return 0
	}
	return max(uint64(2*opt/SectorSize), defaultReadAhead)
}

// ioOpt is the live table's optimal I/O size in bytes (0: none); ok is
// false without a live table.
func (d *Device) ioOpt() (opt int64, ok bool) {
	d.ctl.Lock()
	t := d.live
	var lows []*Device
	var hints []int64
	if t != nil {
		for i, target := range t.targets {
			if h, ok := target.(IOHinter); ok {
				hints = append(hints, h.IOOpt())
				continue
			}
			for _, ref := range t.ctxs[i].Devices() {
				if s, ok := ref.Device.(*stacked); ok {
					lows = append(lows, s.dev)
				}
			}
		}
	}
	d.ctl.Unlock()
	if t == nil {
		return 0, false
	}
	// The devices below are asked once d's lock is let go.
	for _, low := range lows {
		o, _ := low.ioOpt()
		hints = append(hints, o)
	}
	for _, h := range hints {
		opt = lcmNotZero(opt, h)
	}
	return opt, true
}

// lcmNotZero is the kernel's lcm_not_zero: the least common multiple,
// or whichever is not zero.
func lcmNotZero(a, b int64) int64 {
	if a == 0 || b == 0 {
		return a + b
	}
	x, y := a, b
	for y != 0 {
		x, y = y, x%y
	}
	return a / x * b
}
