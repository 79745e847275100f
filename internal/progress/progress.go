// Package progress reports how far a long copy has come: bytes done,
// throughput and an ETA, as a bar redrawn in place on a terminal and as
// plain lines on anything else (a log, a pipe, a file), the way rsync's
// --info=progress2 and rbd's progress do.
//
// A Reporter counts bytes with Add (or through Reader and Writer), draws
// at most every Interval, and draws a last line at Done. It is safe for
// concurrent use.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults: how often a terminal bar is redrawn, and how often a plain
// line is written when the output is not a terminal.
const (
	TerminalInterval = 200 * time.Millisecond
	LineInterval     = 5 * time.Second
)

// Reporter draws the progress of one operation on w.
type Reporter struct {
	mu       sync.Mutex
	w        io.Writer
	what     string // "send s1", "receive vol"
	bar      bool   // w is a terminal: redraw one line
	quiet    bool
	total    int64 // 0: unknown
	done     int64
	start    time.Time
	last     time.Time // last drawn
	drawn    bool      // a bar is on the screen, unterminated
	interval time.Duration
	now      func() time.Time
}

// Options change a Reporter's defaults.
type Options struct {
	// Quiet draws nothing (--no-progress).
	Quiet bool
	// Bar forces the bar (true) or the lines (false) instead of asking
	// whether w is a terminal; nil asks.
	Bar *bool
	// Interval between draws; 0: TerminalInterval for a bar,
	// LineInterval for lines.
	Interval time.Duration
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// New returns a Reporter for the operation what of total bytes (0 if not
// yet known: SetTotal tells it later) drawing on w.
func New(w io.Writer, what string, total int64, o Options) *Reporter {
	r := &Reporter{w: w, what: what, total: total, quiet: o.Quiet, interval: o.Interval, now: o.Now}
	if r.now == nil {
		r.now = time.Now
	}
	if o.Bar != nil {
		r.bar = *o.Bar
	} else {
		r.bar = IsTerminal(w)
	}
	if r.interval == 0 {
		r.interval = LineInterval
		if r.bar {
			r.interval = TerminalInterval
		}
	}
	r.start = r.now()
	r.last = r.start
	return r
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// SetTotal sets the number of bytes the operation will take.
func (r *Reporter) SetTotal(total int64) {
	r.mu.Lock()
	r.total = total
	r.mu.Unlock()
}

// SetDone sets the bytes done so far (a resumed operation starts past 0).
func (r *Reporter) SetDone(done int64) {
	r.mu.Lock()
	r.done = done
	r.mu.Unlock()
}

// Add counts n more bytes done and draws if Interval has passed.
func (r *Reporter) Add(n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done += n
	if now := r.now(); now.Sub(r.last) >= r.interval {
		r.last = now
		r.draw(now, false)
	}
}

// Done draws the final state: a terminal's bar ends its line, and a
// plain output gets one closing line.
func (r *Reporter) Done() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.total == 0 {
		r.total = r.done // it was all there was
	}
	r.draw(r.now(), true)
}

// Abort ends a bar on the screen, if any, so that an error message
// starts on a line of its own; it draws nothing more.
func (r *Reporter) Abort() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.drawn {
		fmt.Fprintln(r.w)
		r.drawn = false
	}
}

// Line is the state as one line, without a bar: "send s1: 12.0 MiB of
// 64.0 MiB (18.8%), 40.0 MiB/s, ETA 1s".
func (r *Reporter) Line() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.line(r.now(), false)
}

func (r *Reporter) line(now time.Time, final bool) string {
	elapsed := now.Sub(r.start)
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(r.done) / s
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", r.what, Bytes(r.done))
	if r.total > 0 {
		fmt.Fprintf(&b, " of %s (%.1f%%)", Bytes(r.total), r.percent())
	}
	fmt.Fprintf(&b, ", %s/s", Bytes(int64(rate)))
	switch {
	case final:
		fmt.Fprintf(&b, ", done in %s", elapsed.Round(time.Millisecond))
	case r.total > 0 && rate > 0 && r.done <= r.total:
		eta := time.Duration(float64(r.total-r.done) / rate * float64(time.Second))
		fmt.Fprintf(&b, ", ETA %s", eta.Round(time.Second))
	default:
		b.WriteString(", ETA unknown")
	}
	return b.String()
}

func (r *Reporter) percent() float64 {
	if r.total <= 0 {
		return 0
	}
	return min(100, float64(r.done)*100/float64(r.total))
}

func (r *Reporter) draw(now time.Time, final bool) {
	if r.quiet {
		return
	}
	line := r.line(now, final)
	if !r.bar {
		fmt.Fprintln(r.w, line)
		return
	}
	const width = 30
	n := 0
	if r.total > 0 {
		n = min(width, int(r.percent()*width/100))
	}
	// \x1b[K clears what a longer previous line left behind.
	fmt.Fprintf(r.w, "\r[%s%s] %s\x1b[K", strings.Repeat("#", n), strings.Repeat(".", width-n), line)
	r.drawn = true
	if final {
		fmt.Fprintln(r.w)
		r.drawn = false
	}
}

// Bytes is n in binary units: "512 B", "1.5 KiB", "64.0 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 5 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[i])
}

// Reader counts what is read through it.
func (r *Reporter) Reader(rd io.Reader) io.Reader { return countReader{rd, r} }

// Writer counts what is written through it.
func (r *Reporter) Writer(w io.Writer) io.Writer { return countWriter{w, r} }

type countReader struct {
	r io.Reader
	p *Reporter
}

func (c countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.Add(int64(n))
	return n, err
}

type countWriter struct {
	w io.Writer
	p *Reporter
}

func (c countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.p.Add(int64(n))
	return n, err
}
