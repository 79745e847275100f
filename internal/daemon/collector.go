package daemon

import (
	"github.com/daxsnap/daxsnap/internal/dm"
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
