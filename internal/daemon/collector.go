package daemon

import (
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/export/fusefs"
	"github.com/daxsnap/daxsnap/internal/export/nbd"
	"github.com/prometheus/client_golang/prometheus"
)

// deviceCollector reports each device's state at scrape time.
type deviceCollector struct{ mgr *dm.Manager }

var (
	descOpen = prometheus.NewDesc("daxsnap_device_openers",
		"Users holding the device open (dmsetup info's open count).", []string{"device"}, nil)
	descSuspended = prometheus.NewDesc("daxsnap_device_suspended",
		"1 while the device is suspended.", []string{"device"}, nil)
	descSize = prometheus.NewDesc("daxsnap_device_size_bytes",
		"Size of the live table in bytes.", []string{"device"}, nil)
	descEvents = prometheus.NewDesc("daxsnap_device_events_total",
		"The device's event number (table swaps, renames, removal).", []string{"device"}, nil)
)

func (c *deviceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOpen, descSuspended, descSize, descEvents} {
		ch <- d
	}
}

func (c *deviceCollector) Collect(ch chan<- prometheus.Metric) {
	for _, dev := range c.mgr.List() {
		in := dev.Info()
		suspended := 0.0
		if in.Suspended {
			suspended = 1
		}
		ch <- prometheus.MustNewConstMetric(descOpen, prometheus.GaugeValue, float64(in.OpenCount), in.Name)
		ch <- prometheus.MustNewConstMetric(descSuspended, prometheus.GaugeValue, suspended, in.Name)
		ch <- prometheus.MustNewConstMetric(descSize, prometheus.GaugeValue, float64(in.Size.Bytes()), in.Name)
		ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(in.EventNr), in.Name)
	}
}

// nbdCollector reports the NBD server's counters (nbd.Stats) at scrape
// time.
type nbdCollector struct{ st *nbd.Stats }

var (
	nbdOps        = nbd.Ops()
	descNBDConns  = prometheus.NewDesc("daxsnap_nbd_connections", "NBD connections being served now.", nil, nil)
	descNBDConnsT = prometheus.NewDesc("daxsnap_nbd_connections_total", "NBD connections taken on since the daemon started.", nil, nil)
	descNBDOps    = prometheus.NewDesc("daxsnap_nbd_requests_total", "NBD requests answered, by command.", []string{"op"}, nil)
	descNBDBytes  = prometheus.NewDesc("daxsnap_nbd_bytes_total", "Payload bytes NBD clients read and wrote, by command (read, write).", []string{"op"}, nil)
	descNBDErrors = prometheus.NewDesc("daxsnap_nbd_errors_total", "NBD requests answered with an error (refused as invalid, or failed), by command.", []string{"op"}, nil)
)

func (c nbdCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNBDConns, descNBDConnsT, descNBDOps, descNBDBytes, descNBDErrors} {
		ch <- d
	}
}

func (c nbdCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descNBDConns, prometheus.GaugeValue, float64(c.st.ConnsOpen.Load()))
	ch <- prometheus.MustNewConstMetric(descNBDConnsT, prometheus.CounterValue, float64(c.st.ConnsTotal.Load()))
	for i, op := range nbdOps {
		if op == "disc" {
			continue // answered by hanging up
		}
		ch <- prometheus.MustNewConstMetric(descNBDOps, prometheus.CounterValue, float64(c.st.Ops[i].Load()), op)
		ch <- prometheus.MustNewConstMetric(descNBDErrors, prometheus.CounterValue, float64(c.st.Errors[i].Load()), op)
		if op == "read" || op == "write" {
			ch <- prometheus.MustNewConstMetric(descNBDBytes, prometheus.CounterValue, float64(c.st.Bytes[i].Load()), op)
		}
	}
}

// fuseCollector reports the FUSE mount's counters (fusefs.Stats) at
// scrape time; registered once the mount is up.
type fuseCollector struct{ st *fusefs.Stats }

var (
	fuseOps        = fusefs.Ops()
	descFUSEOps    = prometheus.NewDesc("daxsnap_fuse_requests_total", "File operations on the FUSE mount's device files, by operation.", []string{"op"}, nil)
	descFUSEErrors = prometheus.NewDesc("daxsnap_fuse_errors_total", "File operations on device files that failed, by operation.", []string{"op"}, nil)
	descFUSEBytes  = prometheus.NewDesc("daxsnap_fuse_bytes_total", "Bytes read and written through device files, by operation (read, write).", []string{"op"}, nil)
)

func (c fuseCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFUSEOps, descFUSEErrors, descFUSEBytes} {
		ch <- d
	}
}

func (c fuseCollector) Collect(ch chan<- prometheus.Metric) {
	for i, op := range fuseOps {
		ch <- prometheus.MustNewConstMetric(descFUSEOps, prometheus.CounterValue, float64(c.st.Ops[i].Load()), op)
		ch <- prometheus.MustNewConstMetric(descFUSEErrors, prometheus.CounterValue, float64(c.st.Errors[i].Load()), op)
		if op == "read" || op == "write" {
			ch <- prometheus.MustNewConstMetric(descFUSEBytes, prometheus.CounterValue, float64(c.st.Bytes[i].Load()), op)
		}
	}
}
