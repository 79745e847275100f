package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/daxsnap/daxsnap/internal/session"
)

// sessionCollector reports the DAX sessions' counters at scrape time.
type sessionCollector struct{ srv *session.Server }

var (
	descDAXSessions = prometheus.NewDesc("daxsnap_dax_sessions", "Open DAX mapping sessions.", nil, nil)
	descDAXMappings = prometheus.NewDesc("daxsnap_dax_mappings", "Live DAX mappings in all sessions.", nil, nil)
	descDAXFaults   = prometheus.NewDesc("daxsnap_dax_faults_total", "Write-protect faults read from sessions' userfaultfds.", nil, nil)
	descDAXHeld     = prometheus.NewDesc("daxsnap_dax_faults_held_total", "Faults held until a protection sweep finished (consistent cut).", nil, nil)
	descDAXRepeats  = prometheus.NewDesc("daxsnap_dax_faults_repeated_total", "Repeats of a held fault (its writer took a signal and faulted again), not held again.", nil, nil)
	descDAXHeldSecs = prometheus.NewDesc("daxsnap_dax_faults_held_seconds_total", "Time faults spent held by protection sweeps.", nil, nil)
	descDAXCOW      = prometheus.NewDesc("daxsnap_dax_cow_faults_total", "Faults that ran copy-before-write (a snapshot was active).", nil, nil)
	descDAXCOWBytes = prometheus.NewDesc("daxsnap_dax_cow_prepared_bytes_total", "Bytes covered by copy-before-write on faults (chunks already copied included).", nil, nil)
	descDAXSweeps   = prometheus.NewDesc("daxsnap_dax_sweeps_total", "Protection sweeps (one per snapshot activation of a mapped device).", nil, nil)
	descDAXSweepSec = prometheus.NewDesc("daxsnap_dax_sweep_seconds_total", "Total duration of protection sweeps (both phases of the cut).", nil, nil)
	descDAXSweepMax = prometheus.NewDesc("daxsnap_dax_sweep_max_seconds", "Longest protection sweep (both phases of the cut) since the daemon started.", nil, nil)
	descDAXHoldSec  = prometheus.NewDesc("daxsnap_dax_cut_hold_phase_seconds_total", "Total duration of cuts' held phases (faults held while the pages touched during the sweep are protected again).", nil, nil)
	descDAXHoldMax  = prometheus.NewDesc("daxsnap_dax_cut_hold_phase_max_seconds", "Longest held phase of a cut since the daemon started.", nil, nil)
	descDAXCutHeld  = prometheus.NewDesc("daxsnap_dax_cut_hold_seconds_total", "Total time cuts held faults, from their held phase to their end (snapshot activation or resume included).", nil, nil)
	descDAXCutMax   = prometheus.NewDesc("daxsnap_dax_cut_hold_max_seconds", "Longest time a cut held faults, from its held phase to its end, since the daemon started.", nil, nil)
	descDAXCuts     = prometheus.NewDesc("daxsnap_dax_cuts", "Consistent cuts under way (a suspended device's until its resume, a snapshot's activation), each holding the write faults of the mappings it covers.", nil, nil)
	descDAXReprot   = prometheus.NewDesc("daxsnap_dax_cut_reprotected_pages_total", "Pages protected again because a write during a cut's sweep un-protected them.", nil, nil)
	descDAXRounds   = prometheus.NewDesc("daxsnap_dax_cut_rounds_total", "Further sweep rounds cuts ran before holding (many pages touched during the sweep).", nil, nil)
	descDAXErrors   = prometheus.NewDesc("daxsnap_dax_handler_errors_total", "Fault handler failures (un-protect or read errors).", nil, nil)
	descDAXRefused  = prometheus.NewDesc("daxsnap_dax_refusals_total", "Map requests and sessions refused.", nil, nil)
	descDAXRecalls  = prometheus.NewDesc("daxsnap_dax_recalls_total", "Mappings recalled before a table change moved their memory (stop the world).", nil, nil)
	descDAXRecallNo = prometheus.NewDesc("daxsnap_dax_recall_failures_total", "Recalled mappings not given back (the change was refused as busy).", nil, nil)
	descDAXRecallS  = prometheus.NewDesc("daxsnap_dax_recall_seconds_total", "Time recalls took.", nil, nil)
	descDAXAdopted  = prometheus.NewDesc("daxsnap_dax_adopted_total", "Mappings made with an earlier daemon and taken over after a restart.", nil, nil)
	descDAXLatency  = prometheus.NewDesc("daxsnap_dax_fault_seconds", "Handler time per resolved fault, from reading it to waking the writer.", nil, nil)
)

func (c *sessionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDAXSessions, descDAXMappings, descDAXFaults, descDAXHeld, descDAXRepeats, descDAXHeldSecs,
		descDAXCOW, descDAXCOWBytes, descDAXSweeps, descDAXSweepSec, descDAXErrors, descDAXRefused, descDAXLatency,
		descDAXRecalls, descDAXRecallNo, descDAXRecallS, descDAXAdopted,
		descDAXSweepMax, descDAXHoldSec, descDAXHoldMax, descDAXCutHeld, descDAXCutMax, descDAXCuts, descDAXReprot, descDAXRounds} {
		ch <- d
	}
}

func (c *sessionCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	sessions, mappings := c.srv.Live()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(descDAXSessions, float64(sessions))
	gauge(descDAXMappings, float64(mappings))
	counter(descDAXFaults, float64(st.Faults.Load()))
	counter(descDAXHeld, float64(st.Held.Load()))
	counter(descDAXRepeats, float64(st.Repeats.Load()))
	counter(descDAXRecalls, float64(st.Recalls.Load()))
	counter(descDAXRecallNo, float64(st.RecallFailures.Load()))
	counter(descDAXRecallS, float64(st.RecallNanos.Load())/1e9)
	counter(descDAXHeldSecs, float64(st.HeldNanos.Load())/1e9)
	counter(descDAXCOW, float64(st.Prepared.Load()))
	counter(descDAXCOWBytes, float64(st.PreparedBytes.Load()))
	counter(descDAXSweeps, float64(st.Sweeps.Load()))
	counter(descDAXSweepSec, float64(st.SweepNanos.Load())/1e9)
	gauge(descDAXSweepMax, float64(st.SweepMaxNanos.Load())/1e9)
	counter(descDAXHoldSec, float64(st.HoldPhaseNanos.Load())/1e9)
	gauge(descDAXHoldMax, float64(st.HoldPhaseMaxNanos.Load())/1e9)
	counter(descDAXCutHeld, float64(st.CutHoldNanos.Load())/1e9)
	gauge(descDAXCutMax, float64(st.CutHoldMaxNanos.Load())/1e9)
	gauge(descDAXCuts, float64(st.Cuts.Load()))
	counter(descDAXReprot, float64(st.Reprotected.Load()))
	counter(descDAXRounds, float64(st.Rounds.Load()))
	counter(descDAXErrors, float64(st.HandlerErrors.Load()))
	counter(descDAXRefused, float64(st.Refusals.Load()))
	counter(descDAXAdopted, float64(st.Adopted.Load()))
	buckets := map[float64]uint64{}
	var count uint64
	for i, le := range session.FaultBuckets {
		count += uint64(st.FaultLatency[i].Load())
		buckets[le.Seconds()] = count
	}
	count += uint64(st.FaultLatency[len(session.FaultBuckets)].Load())
	ch <- prometheus.MustNewConstHistogram(descDAXLatency, count, float64(st.FaultNanos.Load())/1e9, buckets)
}
