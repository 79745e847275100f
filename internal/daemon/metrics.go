package daemon

import (
	"net/http"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/export/nbd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ioMetrics counts block I/O per device and operation, measured where
// the exports (and the API's data route) call the device: dm stays free
// of Prometheus. Each daemon has its own registry.
type ioMetrics struct {
	reg     *prometheus.Registry
	ops     *prometheus.CounterVec
	bytes   *prometheus.CounterVec
	errs    *prometheus.CounterVec
	latency *prometheus.HistogramVec
	// byDevice are other series by device (the snapshot manager's),
	// dropped with the device's.
	byDevice []*prometheus.CounterVec
}

// Operations, as label values.
var ioOps = []string{"read", "write", "flush", "discard", "write_zeroes"}

func newIOMetrics(mgr *dm.Manager, byDevice ...*prometheus.CounterVec) *ioMetrics {
	labels := []string{"device", "op"}
	m := &ioMetrics{
		reg: prometheus.NewRegistry(),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "daxsnap", Subsystem: "device",
			Name: "io_requests_total", Help: "Block I/O requests completed, by device and operation."}, labels),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "daxsnap", Subsystem: "device",
			Name: "io_bytes_total", Help: "Bytes read, written, discarded or zeroed, by device and operation."}, labels),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "daxsnap", Subsystem: "device",
			Name: "io_errors_total", Help: "Block I/O requests that failed, by device and operation."}, labels),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "daxsnap", Subsystem: "device",
			Name: "io_duration_seconds", Help: "Block I/O latency, by device and operation.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12)}, labels),
	}
	m.byDevice = byDevice
	m.reg.MustRegister(m.ops, m.bytes, m.errs, m.latency, &deviceCollector{mgr: mgr},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range byDevice {
		m.reg.MustRegister(c)
	}
	return m
}

// handler serves the registry in Prometheus' text format.
func (m *ioMetrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// forget drops a removed or renamed device's series.
func (m *ioMetrics) forget(name string) {
	l := prometheus.Labels{"device": name}
	m.ops.DeletePartialMatch(l)
	m.bytes.DeletePartialMatch(l)
	m.errs.DeletePartialMatch(l)
	m.latency.DeletePartialMatch(l)
	for _, c := range m.byDevice {
		c.DeletePartialMatch(l)
	}
}

// opMetrics are one operation's series for one device, looked up once.
type opMetrics struct {
	ops, bytes, errs prometheus.Counter
	latency          prometheus.Observer
}

func (o *opMetrics) done(start time.Time, n int64, err error) {
	o.latency.Observe(time.Since(start).Seconds())
	o.ops.Inc()
	if err != nil {
		o.errs.Inc()
		return
	}
	o.bytes.Add(float64(n))
}

// blockDevice is the block I/O of a mapped device (and nbd.Backend).
type blockDevice interface {
	Size() int64
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Flush() error
	Discard(off, n int64) error
	WriteZeroes(off, n int64) error
}

// metered wraps a device's block I/O with the metrics. It passes on what
// the exports ask of a device beyond block I/O: NBD's BLOCK_STATUS
// (nbd.Extenter) and FAST_ZERO (nbd.FastZeroer), and the head start for
// bursts of writes (dm.WritesPreparer).
type metered struct {
	blockDevice
	op [5]*opMetrics // indexed like ioOps
}

var (
	_ nbd.Extenter   = (*metered)(nil)
	_ nbd.FastZeroer = (*metered)(nil)

	_ dm.WritesPreparer = (*metered)(nil)
)

// allocationMapper is a device that knows its holes (*dm.Device).
type allocationMapper interface {
	Allocation(off, n int64) ([]dm.Allocation, error)
}

// Extents is the device's allocation map; a device without one is data.
func (w *metered) Extents(off, n int64) ([]nbd.Extent, error) {
	am, ok := w.blockDevice.(allocationMapper)
	if !ok {
		return []nbd.Extent{{Length: n}}, nil
	}
	runs, err := am.Allocation(off, n)
	if err != nil {
		return nil, err
	}
	out := make([]nbd.Extent, len(runs))
	for i, r := range runs {
		out[i] = nbd.Extent{Length: r.Len, Hole: r.Hole, Zero: r.Hole}
	}
	return out, nil
}

// PrepareWrites is the device's (dm.WritesPreparer): the NBD reader's
// head start for a burst of writes, which the writes' metrics count.
func (w *metered) PrepareWrites(rs []dm.Range) error {
	if wp, ok := w.blockDevice.(dm.WritesPreparer); ok {
		return wp.PrepareWrites(rs)
	}
	return nil
}

// FastZero is the device's: whether its WriteZeroes beats writing zeroes.
func (w *metered) FastZero() bool {
	fz, ok := w.blockDevice.(dm.FastZeroer)
	return ok && fz.FastZero()
}

func (m *ioMetrics) wrap(name string, dev blockDevice) *metered {
	w := &metered{blockDevice: dev}
	for i, op := range ioOps {
		w.op[i] = &opMetrics{ops: m.ops.WithLabelValues(name, op), bytes: m.bytes.WithLabelValues(name, op),
			errs: m.errs.WithLabelValues(name, op), latency: m.latency.WithLabelValues(name, op)}
	}
	return w
}

func (w *metered) ReadAt(p []byte, off int64) (int, error) {
	start := time.Now()
	n, err := w.blockDevice.ReadAt(p, off)
	w.op[0].done(start, int64(n), err)
	return n, err
}

// LendRead passes on the device's loans of memory for reads (the FUSE
// and NBD exports' reads without a copy, dm.Lender), counted as reads.
func (w *metered) LendRead(off, n int64) ([]byte, func(), bool) {
	start := time.Now()
	mem, release, ok := dm.LendFrom(w.blockDevice, off, n)
	if ok {
		w.op[0].done(start, int64(len(mem)), nil)
	}
	return mem, release, ok
}

func (w *metered) WriteAt(p []byte, off int64) (int, error) {
	start := time.Now()
	n, err := w.blockDevice.WriteAt(p, off)
	w.op[1].done(start, int64(n), err)
	return n, err
}

func (w *metered) Flush() error {
	start := time.Now()
	err := w.blockDevice.Flush()
	w.op[2].done(start, 0, err)
	return err
}

func (w *metered) Discard(off, n int64) error {
	start := time.Now()
	err := w.blockDevice.Discard(off, n)
	w.op[3].done(start, n, err)
	return err
}

func (w *metered) WriteZeroes(off, n int64) error {
	start := time.Now()
	err := w.blockDevice.WriteZeroes(off, n)
	w.op[4].done(start, n, err)
	return err
}
