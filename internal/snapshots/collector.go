package snapshots

import (
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
	"github.com/prometheus/client_golang/prometheus"
)

// collector reports each snapshot's COW use and merge at scrape time:
// the usage as a value from the live target (snapshot.UsageOf), not
// parsed from its status text.
type collector struct{ mg *Manager }

var (
	snapLabels  = []string{"snapshot", "origin"}
	descCOWUsed = prometheus.NewDesc("daxsnap_snapshot_cow_used_bytes",
		"Bytes of the snapshot's COW device in use (header, metadata and copied chunks); absent while the snapshot is invalid.", snapLabels, nil)
	descCOWSize = prometheus.NewDesc("daxsnap_snapshot_cow_size_bytes",
		"Size of the snapshot's COW device in bytes; absent while the snapshot is invalid.", snapLabels, nil)
	descInvalidations = prometheus.NewDesc("daxsnap_snapshot_invalidations_total",
		"Times the snapshot was invalidated (its COW filled up or could not be written): 0 or 1, as an invalid snapshot stays invalid.", snapLabels, nil)
	descMergeRemaining = prometheus.NewDesc("daxsnap_snapshot_merge_remaining_chunks",
		"COW chunks the running merge of the snapshot still has to copy back to its origin.", snapLabels, nil)
	descMergeRatio = prometheus.NewDesc("daxsnap_snapshot_merge_progress_ratio",
		"Share of the running merge done, 0 to 1, counted from when this daemon took the merge up.", snapLabels, nil)
)

// Collector reports the snapshots' COW use, invalidations and merges, for
// the daemon's registry.
func (mg *Manager) Collector() prometheus.Collector { return collector{mg} }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCOWUsed, descCOWSize, descInvalidations, descMergeRemaining, descMergeRatio} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	list, err := c.mg.Snapshots("")
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descCOWUsed, err)
		return
	}
	for _, s := range list {
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, s.Name, s.Origin)
		}
		// A merging snapshot's COW is under the merge target.
		name := s.Name
		if s.Merge != nil {
			name = s.Merge.Device
			gauge(descMergeRemaining, float64(s.Merge.Remaining))
			gauge(descMergeRatio, s.Merge.Percent/100)
		}
		dev, err := c.mg.devs.Get(name)
		if err != nil {
			continue // removed since the listing
		}
		u, ok := snapshot.UsageOf(dev)
		if !ok {
			continue
		}
		invalid := 0.0
		if u.State == snapshot.Invalid {
			invalid = 1
		}
		ch <- prometheus.MustNewConstMetric(descInvalidations, prometheus.CounterValue, invalid, s.Name, s.Origin)
		if u.State == snapshot.Valid {
			gauge(descCOWUsed, float64(u.Allocated.Bytes()))
			gauge(descCOWSize, float64(u.Total.Bytes()))
		}
	}
}
