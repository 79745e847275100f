package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/export/nbd/nbdclient"
	"github.com/daxsnap/daxsnap/internal/stream"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// nbd opens device name on c's daemon over NBD.
func (c *cli) nbd(name string) *nbdclient.Client {
	c.t.Helper()
	n, err := nbdclient.Dial("unix", filepath.Join(filepath.Dir(c.socket), daemon.NBDSocketName), name)
	if err != nil {
		c.t.Fatal(err)
	}
	return n
}

// image is the SHA-256 of device name's content, read over NBD in
// pieces (NBD limits one request to 32 MiB).
func (c *cli) image(name string) [32]byte {
	c.t.Helper()
	n := c.nbd(name)
	defer n.Close()
	h := sha256.New()
	buf := make([]byte, 4<<20)
	for off := int64(0); off < n.Size(); off += int64(len(buf)) {
		p := buf[:min(int64(len(buf)), n.Size()-off)]
		if err := n.ReadAt(p, off); err != nil {
			c.t.Fatal(err)
		}
		h.Write(p)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// send runs `daxsnap send args...` and returns the stream.
func (c *cli) send(args ...string) []byte {
	c.t.Helper()
	s, _ := c.sendLog(args...)
	return s
}

// sendLog runs `daxsnap send args...` and returns the stream and stderr.
func (c *cli) sendLog(args ...string) ([]byte, string) {
	c.t.Helper()
	var out, errOut bytes.Buffer
	if code := run(append([]string{"--socket", c.socket, "send"}, args...), strings.NewReader(""), &out, &errOut); code != 0 {
		c.t.Fatalf("daxsnap send %s: exit %d: %s", strings.Join(args, " "), code, errOut.String())
	}
	return out.Bytes(), errOut.String()
}

// receive runs `daxsnap receive args...` with the stream on stdin, with
// the spool in spool.
func (c *cli) receive(spool string, s []byte, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(append([]string{"--socket", c.socket, "receive", "--spool-dir", spool}, args...), bytes.NewReader(s), &out, &errOut)
	return code, out.String(), errOut.String()
}

func (c *cli) mustReceive(spool string, s []byte, args ...string) string {
	c.t.Helper()
	code, out, errOut := c.receive(spool, s, args...)
	if code != 0 {
		c.t.Fatalf("daxsnap receive %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// scribble writes a random pattern over device name: extents of random
// data or zeroes at sector-aligned random offsets.
func (c *cli) scribble(rng *rand.Rand, name string) {
	c.t.Helper()
	n := c.nbd(name)
	defer n.Close()
	size := n.Size()
	for i := range 1 + rng.IntN(12) {
		l := int64(1+rng.IntN(128)) * 512
		off := rng.Int64N((size-l)/512+1) * 512
		p := make([]byte, l)
		// The first write has data: a stream of zeroes alone has no data
		// record, which TestSendReceive_refused corrupts.
		if i == 0 || rng.IntN(4) != 0 {
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
		}
		if err := n.WriteAt(p, off); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := n.Flush(); err != nil {
		c.t.Fatal(err)
	}
}

// newPair starts a sending and a receiving daemon with a 4 MiB volume
// each (vol and copy), and returns them with a spool directory and a
// random source.
func newPair(t *testing.T) (src, dst *cli, spool string, rng *rand.Rand) {
	src, dst = newCLI(t), newCLI(t)
	src.fileVol("vol")
	dst.fileVol("copy")
	return src, dst, t.TempDir(), seeded(t)
}

// seeded returns a random source and logs its seed; $DAXSNAP_TEST_SEED
// sets it, to run a failure's seed again.
func seeded(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("DAXSNAP_TEST_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("DAXSNAP_TEST_SEED=%q: %v", v, err)
		}
	}
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, 0))
}

// Ensure that a full stream and nine incrementals, each of random writes
// (data and zeroes), rebuild every generation byte for byte on another
// daemon (its own state and devices), that an incremental stream carries
// only what changed, and that the receiver keeps each snapshot. Even
// generations find the changes by changed-block tracking (reading only
// the changed chunks), odd ones by comparing both snapshots (--compare).
func TestSendReceive_tenGenerations(t *testing.T) {
	src, dst, spool, rng := newPair(t)
	for gen := 1; gen <= 10; gen++ {
		snap := fmt.Sprintf("s%d", gen)
		src.scribble(rng, "vol")
		src.ok("snapshot", "create", "vol", snap)
		var s []byte
		if gen == 1 {
			s = src.send(snap)
		} else if gen%2 == 1 {
			s = src.send(snap, "--since", fmt.Sprintf("s%d", gen-1), "--compare")
		} else {
			// Changed-block tracking: only the changed chunks are read.
			var log string
			s, log = src.sendLog(snap, "--since", fmt.Sprintf("s%d", gen-1))
			m := regexp.MustCompile(`send \S+ since \S+: \S+ \S+ of ([0-9.]+ \S+) `).FindStringSubmatch(log)
			if m == nil || m[1] == "8.0 MiB" || strings.Contains(log, "changed-block tracking cannot") {
				t.Fatalf("generation %d: send --since read both snapshots in full instead of the changed chunks: %q", gen, log)
			}
			// At most 12 extents of 64 KiB, each on at most 17 pages.
			if max := 12 * 17 * 4096 * 11 / 10; len(s) > max {
				t.Fatalf("generation %d: incremental stream of %d bytes, more than the %d the writes can have changed", gen, len(s), max)
			}
		}
		out := dst.mustReceive(spool, s, "copy")
		if !strings.HasPrefix(out, "received "+snap+" (") || !strings.HasSuffix(out, " into copy as snapshot "+snap+"\n") {
			t.Fatalf("generation %d: receive said %q", gen, out)
		}
		want := src.image(snap)
		if got := dst.image("copy"); got != want {
			t.Fatalf("generation %d: copy's SHA-256 %x, %s's %x", gen, got, snap, want)
		}
		if got := dst.image(snap); got != want {
			t.Fatalf("generation %d: the receiver's snapshot %s has SHA-256 %x, the sender's %x", gen, snap, got, want)
		}
	}
	if left, _ := os.ReadDir(spool); len(left) != 0 {
		t.Fatalf("receive left %d files in the spool directory", len(left))
	}
}

// received is the receiving side's state that a refused stream must not
// change: the volume's content and its snapshots.
func (c *cli) state(vol string) string {
	c.t.Helper()
	return fmt.Sprintf("%x %s", c.image(vol), c.ok("snapshot", "list", vol))
}

func (c *cli) refused(spool string, s []byte, want string, args ...string) {
	c.t.Helper()
	before := c.state(args[0])
	code, _, errOut := c.receive(spool, s, append(args, "--no-progress")...)
	checkFailure(c.t, code, errOut, want, append([]string{"receive"}, args...))
	if after := c.state(args[0]); after != before {
		c.t.Fatalf("receive %s refused (%s) but changed it:\nbefore %s\nafter  %s", args[0], strings.TrimSpace(errOut), before, after)
	}
}

// Ensure that receive refuses, saying why and leaving the volume and its
// snapshots as they were: a truncated stream, a corrupt one, one that
// applies on a snapshot the volume does not have (out of order), one
// already received (replayed), one for a volume written since, and one
// of another size; and that a truncated receive resumes from where it
// stopped, sending only the rest.
func TestSendReceive_refused(t *testing.T) {
	src, dst, spool, rng := newPair(t)
	var streams [4][]byte
	for gen := 1; gen <= 3; gen++ {
		src.scribble(rng, "vol")
		src.ok("snapshot", "create", "vol", fmt.Sprintf("s%d", gen))
	}
	streams[1] = src.send("s1")
	streams[2] = src.send("s2", "--since", "s1")
	streams[3] = src.send("s3", "--since", "s2")
	dst.mustReceive(spool, streams[1], "copy")

	dst.refused(spool, streams[3], "the stream applies on snapshot s2, which copy does not have (its snapshots: s1)", "copy")
	dst.refused(spool, streams[1], "copy already has snapshot s1: this stream was received before (a replay?)", "copy")
	bad := append([]byte(nil), streams[2]...)
	bad[dataByte(t, bad)] ^= 1
	dst.refused(spool, bad, "stream corrupt", "copy")
	dst.refused(spool, []byte("rbd diff v1\n"), `not a daxsnap send stream`, "copy")
	dst.ok("create", "small", "--table", "0 4096 zero")
	dst.refused(spool, streams[1], "the stream is of a 4194304-byte image, small is 2097152 bytes", "small")

	// Truncated: kept for a resume that sends only the rest.
	cut := int64(len(streams[2]) / 3)
	before := dst.state("copy")
	code, _, errOut := dst.receive(spool, streams[2][:cut], "copy", "--no-progress")
	resume := fmt.Sprintf("send the rest with `daxsnap send s2 --since s1 --resume-from %d | daxsnap receive copy --resume`", cut)
	checkFailure(t, code, errOut, "stream truncated", []string{"receive", "copy"})
	if !strings.Contains(errOut, resume) {
		t.Fatalf("truncated receive: %q, want it to say %q", errOut, resume)
	}
	if after := dst.state("copy"); after != before {
		t.Fatal("a truncated receive changed copy")
	}
	rest := src.send("s2", "--since", "s1", "--resume-from", fmt.Sprint(cut))
	if len(rest) >= len(streams[2])-int(cut)+100 {
		t.Fatalf("resume sent %d bytes for the %d missing", len(rest), len(streams[2])-int(cut))
	}
	// A resume of another stream is refused and keeps what was kept.
	var other []byte
	for _, args := range [][]string{{"s3", "--since", "s2"}, {"s3"}, {"s1"}} {
		if int64(len(src.send(args...))) > cut {
			other = src.send(append(args, "--resume-from", fmt.Sprint(cut))...)
			break
		}
	}
	if other == nil {
		t.Fatalf("no other stream is longer than %d bytes", cut)
	}
	dst.refused(spool, other, "the stream that resumes is not the one kept", "copy", "--resume")
	dst.mustReceive(spool, rest, "copy", "--resume")
	if dst.image("copy") != src.image("s2") {
		t.Fatal("copy after the resumed receive is not s2")
	}

	// Written since s2: the incremental from s2 no longer applies.
	n := dst.nbd("copy")
	n.WriteAt([]byte("changed"), 4096)
	n.Flush()
	n.Close()
	dst.refused(spool, streams[3], "copy changed since its snapshot s2", "copy")
}

// Ensure that an apply cut short (a crash between two writes) leaves a
// mark, and that `receive --resume` with no more stream finishes it from
// the spool, though the volume is no longer as its snapshot FROM was.
func TestSendReceive_interruptedApply(t *testing.T) {
	src, dst, spool, rng := newPair(t)
	src.scribble(rng, "vol")
	src.ok("snapshot", "create", "vol", "s1")
	dst.mustReceive(spool, src.send("s1"), "copy")
	n := src.nbd("vol") // two extents apart: two records
	n.WriteAt(bytes.Repeat([]byte{1}, 8192), 0)
	n.WriteAt(bytes.Repeat([]byte{2}, 8192), 2<<20)
	n.Flush()
	n.Close()
	src.ok("snapshot", "create", "vol", "s2")
	s := src.send("s2", "--since", "s1")
	_, sum, err := stream.Verify(bytes.NewReader(s))
	if err != nil || sum.Records < 2 {
		t.Fatalf("stream s2 since s1: %+v %v: want 2 records or more", sum, err)
	}
	applyHook = func(i int) error {
		if i == 1 {
			return errors.New("simulated crash")
		}
		return nil
	}
	code, _, errOut := dst.receive(spool, s, "copy", "--no-progress")
	applyHook = nil
	checkFailure(t, code, errOut, "simulated crash: copy is partly written; finish with `daxsnap receive copy --resume < /dev/null`", []string{"receive"})
	dst.mustReceive(spool, nil, "copy", "--resume", "--no-progress")
	if dst.image("copy") != src.image("s2") || dst.image("s2") != src.image("s2") {
		t.Fatal("copy after the finished apply is not s2")
	}
}

// Ensure that a user who may not read a snapshot cannot send it: uid
// 65534 running daxsnap send on a root-owned 0600 volume's snapshot is
// refused by the daemon's NBD door, and writes no stream.
func TestSendReceive_nobodyCannotSend(t *testing.T) {
	testutil.RequireRoot(t)
	c := newCLI(t)
	c.fileVol("vol")
	c.ok("snapshot", "create", "vol", "s1")
	for d := filepath.Dir(c.socket); d != "/tmp" && d != "/" && d != "."; d = filepath.Dir(d) {
		os.Chmod(d, 0o711)
	}
	// Let others reach the API (it answers them read-only), so that the
	// refusal must come from the NBD door.
	if err := os.Chmod(c.socket, 0o666); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.MkdirTemp("", "daxsnap-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bin) })
	os.Chmod(bin, 0o755)
	exe := filepath.Join(bin, "daxsnap")
	if err := copyFile(self, exe); err != nil {
		t.Fatal(err)
	}
	asNobody := func(snap string) (error, []byte, string) {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), serveEnv+`=["--socket",`+fmt.Sprintf("%q", c.socket)+`,"send",`+fmt.Sprintf("%q", snap)+`,"--no-progress"]`, "HOME=/nonexistent")
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return err, out.Bytes(), errOut.String()
	}
	err, out, errOut := asNobody("s1")
	if err == nil || len(out) != 0 || !strings.Contains(errOut, "cannot read s1 through the daemon's NBD socket (you need read permission on it") {
		t.Fatalf("send s1 as uid 65534: %v, %d bytes of stream, stderr %q; want a refusal and no stream", err, len(out), errOut)
	}
	// The refusal is the NBD door's, for this user and this snapshot
	// (snapshots are root's, 0600, whatever their origin's mode).
	if !strings.Contains(errOut, "uid 65534 (gid 65534") || !strings.Contains(errOut, "may not open s1") {
		t.Fatalf("send s1 as uid 65534: stderr %q does not carry the NBD door's refusal", errOut)
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Ensure that send, receive and the apply report progress on stderr: a
// closing line with bytes, throughput and time when it is no terminal,
// a bar redrawn in place (\r) when it is one.
func TestSendReceive_progress(t *testing.T) {
	src, dst, spool, _ := newPair(t)
	src.ok("snapshot", "create", "vol", "s1")
	var s, errOut bytes.Buffer
	if code := run([]string{"--socket", src.socket, "send", "s1"}, strings.NewReader(""), &s, &errOut); code != 0 {
		t.Fatalf("send s1: exit %d: %s", code, errOut.String())
	}
	// A line every 5 s (a loaded machine may take that long), then this.
	if !regexp.MustCompile(`(^|\n)send s1: 4\.0 MiB of 4\.0 MiB \(100\.0%\), [0-9.]+ [KMG]?i?B/s, done in \S+\n$`).MatchString(errOut.String()) {
		t.Fatalf("send's progress on a buffer: %q", errOut.String())
	}
	master, slave := openPTY(t)
	screen := make(chan []byte)
	go func() {
		drawn, _ := io.ReadAll(master) // EIO once the slave is closed and drained
		screen <- drawn
	}()
	var out bytes.Buffer
	code := run([]string{"--socket", dst.socket, "receive", "copy", "--spool-dir", spool}, bytes.NewReader(s.Bytes()), &out, slave)
	slave.Close()
	drawn := <-screen
	if code != 0 {
		t.Fatalf("receive copy: exit %d: %q", code, drawn)
	}
	for _, want := range []string{"\r[##############################] receive copy: ", "\r[##############################] apply to copy: 4.0 MiB of 4.0 MiB (100.0%)"} {
		if !bytes.Contains(drawn, []byte(want)) {
			t.Fatalf("receive's bar on a terminal: %q, want %q in it", drawn, want)
		}
	}
}

// Ensure that after a receive cut short (killed, so nobody saw the byte
// count), sending the whole stream again to `receive --resume` checks the
// part kept against it and completes the receive; another stream is
// refused and the part kept stays.
func TestSendReceive_resumeWholeStream(t *testing.T) {
	src, dst, spool, rng := newPair(t)
	src.scribble(rng, "vol")
	src.ok("snapshot", "create", "vol", "s1")
	src.scribble(rng, "vol")
	src.ok("snapshot", "create", "vol", "s2")
	s1, s2 := src.send("s1"), src.send("s2")
	if code, _, errOut := dst.receive(spool, s1[:len(s1)*2/3], "copy", "--no-progress"); code != 1 || !strings.Contains(errOut, "stream truncated") {
		t.Fatalf("receive of 2/3 of s1: exit %d, %q", code, errOut)
	}
	dst.refused(spool, s2, "the stream that resumes is not the one kept", "copy", "--resume")
	dst.mustReceive(spool, s1, "copy", "--resume", "--no-progress")
	if dst.image("copy") != src.image("s1") {
		t.Fatal("copy after receive --resume of the whole stream is not s1")
	}
}

// dataByte is the index of a byte of data in stream s (in its first 'w'
// record), where a flipped bit is caught by the checksum alone.
func dataByte(t *testing.T, s []byte) int {
	t.Helper()
	r, err := stream.NewReader(bytes.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	for {
		rec, err := r.Next()
		if err != nil {
			t.Fatalf("no data record in the stream: %v", err)
		}
		if !rec.Zero && rec.Len >= 64 {
			if i := bytes.Index(s, rec.Data[:64]); i >= 0 {
				return i + 32
			}
		}
	}
}
