package daemon

import "github.com/prometheus/client_golang/prometheus"

// ckCollector reports each checkpointed volume's engine at scrape time
// (docs/metrics.md).
type ckCollector struct{ cks *checkpoints }

var (
	descCkEnabled = prometheus.NewDesc("daxsnap_checkpoint_enabled",
		"1 for a checkpointed volume whose checkpoints run, 0 for one whose checkpoints did not start (see its note).", []string{"device"}, nil)
	descCkLast = prometheus.NewDesc("daxsnap_checkpoint_last_complete_timestamp_seconds",
		"When the cut of the newest complete checkpoint was made (Unix time); absent before the first.", []string{"device"}, nil)
	descCkSeq = prometheus.NewDesc("daxsnap_checkpoint_last_complete_seq",
		"Sequence number of the newest complete checkpoint in the image.", []string{"device"}, nil)
	descCkDuration = prometheus.NewDesc("daxsnap_checkpoint_last_duration_seconds",
		"How long the last checkpoint took, from its cut until it was durable.", []string{"device"}, nil)
	descCkCut = prometheus.NewDesc("daxsnap_checkpoint_last_cut_seconds",
		"How long the last checkpoint's cut held the volume's writers.", []string{"device"}, nil)
	descCkTotal = prometheus.NewDesc("daxsnap_checkpoint_completed_total",
		"Checkpoints completed since checkpoints (or the daemon) started.", []string{"device"}, nil)
	descCkErrors = prometheus.NewDesc("daxsnap_checkpoint_errors_total",
		"Checkpoints that failed (the volume is unharmed; the previous checkpoint stays in the image).", []string{"device"}, nil)
	descCkBytes = prometheus.NewDesc("daxsnap_checkpoint_written_bytes_total",
		"Bytes written back to the image.", []string{"device"}, nil)
	descCkWaits = prometheus.NewDesc("daxsnap_checkpoint_backpressure_waits_total",
		"Writers that waited for room in a full copy-on-write buffer during a checkpoint.", []string{"device"}, nil)
	descCkWaitTime = prometheus.NewDesc("daxsnap_checkpoint_backpressure_seconds_total",
		"Time writers spent in those waits.", []string{"device"}, nil)
	descCkBuffer = prometheus.NewDesc("daxsnap_checkpoint_buffer_bytes",
		"Copy-on-write buffer in use now.", []string{"device"}, nil)
	descCkBufferCap = prometheus.NewDesc("daxsnap_checkpoint_buffer_capacity_bytes",
		"Cap of the copy-on-write buffer.", []string{"device"}, nil)
	descCkRunning = prometheus.NewDesc("daxsnap_checkpoint_in_progress",
		"1 while a checkpoint is being written back.", []string{"device"}, nil)
	descCkRestoreLeft = prometheus.NewDesc("daxsnap_checkpoint_restore_remaining_bytes",
		"Bytes of a volume restored on demand (serve --restore=lazy) not restored yet; absent when none is under way.", []string{"device"}, nil)
)

func (c ckCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCkEnabled, descCkLast, descCkSeq, descCkDuration, descCkCut, descCkTotal, descCkErrors,
		descCkBytes, descCkWaits, descCkWaitTime, descCkBuffer, descCkBufferCap, descCkRunning, descCkRestoreLeft} {
		ch <- d
	}
}

func (c ckCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, dev string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, dev)
	}
	counter := func(d *prometheus.Desc, v float64, dev string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, dev)
	}
	for dev, v := range c.cks.all() {
		name := dev.Name()
		if done, total, ok := dev.Restoring(); ok {
			gauge(descCkRestoreLeft, float64(total-done), name)
		}
		if v.eng == nil {
			gauge(descCkEnabled, 0, name)
			continue
		}
		gauge(descCkEnabled, 1, name)
		st := v.eng.Status()
		if st.Last != nil {
			gauge(descCkLast, float64(st.Last.Time.UnixNano())/1e9, name)
			gauge(descCkSeq, float64(st.Last.Seq), name)
		}
		gauge(descCkDuration, st.LastDuration.Seconds(), name)
		gauge(descCkCut, st.LastCut.Seconds(), name)
		counter(descCkTotal, float64(st.Completed), name)
		counter(descCkErrors, float64(st.Failed), name)
		counter(descCkBytes, float64(st.Written), name)
		counter(descCkWaits, float64(st.Backpressure), name)
		counter(descCkWaitTime, st.BackpressureTime.Seconds(), name)
		gauge(descCkBuffer, float64(st.BufferBytes), name)
		gauge(descCkBufferCap, float64(st.BufferCap), name)
		running := 0.0
		if st.Running {
			running = 1
		}
		gauge(descCkRunning, running, name)
	}
}
