package progress

import (
	"os"
	"strings"
	"testing"
	"time"
)

// clock is a fake time.Now that tests move by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// Ensure that plain output gets a line per interval with bytes, percent,
// throughput and ETA, nothing between intervals, and a closing line.
func TestReporter_lines(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out strings.Builder
	no := false
	r := New(&out, "send s1", 100<<20, Options{Bar: &no, Now: c.now})
	c.t = c.t.Add(time.Second)
	r.Add(10 << 20) // 1 s < 5 s: nothing yet
	if out.Len() != 0 {
		t.Fatalf("drew before the interval: %q", out.String())
	}
	c.t = c.t.Add(4 * time.Second)
	r.Add(10 << 20) // 20 MiB in 5 s: 4 MiB/s, 80 MiB left: 20 s
	want := "send s1: 20.0 MiB of 100.0 MiB (20.0%), 4.0 MiB/s, ETA 20s\n"
	if out.String() != want {
		t.Fatalf("line after 5 s:\n got %q\nwant %q", out.String(), want)
	}
	c.t = c.t.Add(time.Second)
	r.Add(80 << 20)
	r.Done()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 || lines[1] != "send s1: 100.0 MiB of 100.0 MiB (100.0%), 16.7 MiB/s, done in 6s" {
		t.Fatalf("after Done: %q", out.String())
	}
}

// Ensure that a terminal gets one bar redrawn in place (\r, no newline
// until Done), that an unknown total says so, and that Quiet draws nothing.
func TestReporter_bar(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out strings.Builder
	yes := true
	r := New(&out, "receive vol", 0, Options{Bar: &yes, Now: c.now})
	c.t = c.t.Add(time.Second)
	r.Add(1 << 20)
	if got := out.String(); !strings.HasPrefix(got, "\r[") || strings.Contains(got, "\n") || !strings.Contains(got, "1.0 MiB, 1.0 MiB/s, ETA unknown") {
		t.Fatalf("bar with unknown total: %q", got)
	}
	r.SetTotal(4 << 20)
	c.t = c.t.Add(time.Second)
	r.Add(1 << 20)
	if got := out.String(); !strings.Contains(got, "\r[###############...............] receive vol: 2.0 MiB of 4.0 MiB (50.0%), 1.0 MiB/s, ETA 2s") {
		t.Fatalf("bar at half: %q", got)
	}
	r.Done()
	if !strings.HasSuffix(out.String(), "\n") {
		t.Fatalf("Done left the bar's line open: %q", out.String())
	}

	var quiet strings.Builder
	q := New(&quiet, "x", 10, Options{Quiet: true, Bar: &yes, Now: c.now})
	c.t = c.t.Add(time.Hour)
	q.Add(5)
	q.Done()
	if quiet.Len() != 0 {
		t.Fatalf("Quiet drew %q", quiet.String())
	}
}

// Ensure that a pipe is not a terminal (it gets lines, not a bar), and
// that Reader and Writer count bytes.
func TestReporter_pipeAndCounters(t *testing.T) {
	rd, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	defer w.Close()
	if IsTerminal(w) || IsTerminal(&strings.Builder{}) {
		t.Fatal("a pipe or a buffer is taken for a terminal")
	}
	var sink strings.Builder
	r := New(&sink, "x", 0, Options{Quiet: true})
	if _, err := r.Writer(&sink).Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if _, err := r.Reader(strings.NewReader("abc")).Read(buf); err != nil {
		t.Fatal(err)
	}
	if got := r.Line(); !strings.HasPrefix(got, "x: 8 B,") {
		t.Fatalf("after 5 written and 3 read: %q", got)
	}
	r.Done() // the total was never known: it was what was done
	if got := r.Line(); !strings.HasPrefix(got, "x: 8 B of 8 B (100.0%),") {
		t.Fatalf("after Done with no total: %q", got)
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 64 << 20: "64.0 MiB", 5 << 40: "5.0 TiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
