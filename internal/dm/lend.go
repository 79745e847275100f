package dm

// Lender is implemented by whatever can lend the memory behind a range for
// a read (*Device, and the exports' wrappers of one): the FUSE and NBD
// exports answer a read of such a range straight from that memory,
// without copying it into the request's buffer first. mem may be shorter
// than n (the rest needs a copy); release, called exactly once, ends the
// loan; ok false means the range needs ReadAt.
type Lender interface {
	LendRead(off, n int64) (mem []byte, release func(), ok bool)
}

// LendFrom is be's LendRead, or ok false if be is not a Lender: wrappers
// of a device pass loans on with it.
func LendFrom(be any, off, n int64) (mem []byte, release func(), ok bool) {
	l, ok := be.(Lender)
	if !ok {
		return nil, nil, false
	}
	return l.LendRead(off, n)
}

// LendRead lends the memory behind [off, off+n) for a read served without
// a copy (the FUSE and NBD exports write it straight into their replies): mem holds
// the bytes, fewer than n at the end of a table line. Until release,
// which the caller must call exactly once, the device's I/O is admitted
// as for a ReadAt under way, and so is that of the mapped devices below
// whose memory it is: a suspend, and so a table swap, of any of them
// waits for it, so mem is neither remapped nor unmapped while lent. ok is
// false, with nothing held, where a copy is needed: a line that is not
// DAX-capable, or any error, which ReadAt then reports.
func (d *Device) LendRead(off, n int64) (mem []byte, release func(), ok bool) {
	t, err := d.enterRange(off, n) // an error: ReadAt reports it
	if err != nil {
		return nil, nil, false
	}
	mem, below, ok := t.lend(off, n)
	switch {
	case !ok:
		d.exit()
		return nil, nil, false
	case below == nil:
		return mem, d.exit, true
	}
	return mem, func() { below(); d.exit() }, true
}

// lend is directAccess for a read, lent: the line's target must say
// where the bytes live (a Remapper); memory of a mapped device below is
// lent by that device (below releases it), holding its I/O as a read
// through it would, in the same order.
func (t *Table) lend(off, n int64) (mem []byte, below func(), ok bool) {
	if n <= 0 || off < 0 || off >= t.size.Bytes() {
		return nil, nil, false
	}
	i := t.find(off)
	if !t.caps[i].caps.Has(DAX) {
		return nil, nil, false
	}
	rm, ok := t.targets[i].(Remapper)
	if !ok {
		return nil, nil, false
	}
	l := t.lines[i]
	toff := off - l.Start.Bytes()
	n = min(n, l.Len.Bytes()-toff)
	ref, devOff, length, err := rm.Remap(toff, n)
	if err != nil || ref == nil || length <= 0 {
		return nil, nil, false
	}
	n = min(n, length)
	switch dev := ref.Device.(type) {
	case *stacked:
		if dev.check("read", readOp, devOff, n) != nil || dev.inRange("read", devOff, n) != nil {
			return nil, nil, false
		}
		return dev.dev.LendRead(devOff, n)
	case MemorySource:
		return nil, nil, false // a mapped device of another kind: copy
	}
	mem, err = t.directAccess(off, n)
	return mem, nil, err == nil && len(mem) > 0
}
