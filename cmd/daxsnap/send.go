package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"path/filepath"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/export/nbd/nbdclient"
	"github.com/daxsnap/daxsnap/internal/progress"
	"github.com/daxsnap/daxsnap/internal/stream"
	"github.com/daxsnap/daxsnap/internal/wire"
	"github.com/spf13/cobra"
)

// send and receive move a snapshot between daemons as a stream
// (internal/stream: rbd diff v2 with a checksum trailer), reading and
// writing the devices through NBD with the caller's own identity, so
// nobody sends what they may not read or receives into what they may not
// write. docs/backup.md, "Send and receive", has the format and rules.

// Sizes of the copy: the granule compared and classified (zero or data),
// the most one NBD request or stream record carries, and one read.
const (
	sendPage   = 4 << 10
	sendRecord = 1 << 20
	sendBlock  = 1 << 20
)

// resumeBanner starts what `send --resume-from N` writes: this banner,
// le64 N and the SHA-256 of the stream's first N bytes, then the stream
// from byte N on. `receive --resume` checks both against what it kept.
const resumeBanner = "daxsnap resume v1\n"

func (a *app) sendCmd() *cobra.Command {
	var since string
	var resumeFrom int64
	var v1, noProgress, compare bool
	cmd := &cobra.Command{
		Use:   "send SNAP [--since OLDER] [--resume-from N] > STREAM",
		Short: "Write snapshot SNAP as a stream (full, or changes since OLDER) to stdout, for `receive`",
		Long: "Write snapshot SNAP to stdout as a stream that `daxsnap receive` applies to a volume\n" +
			"of another daemon: the whole image, or with --since OLDER (an older snapshot of the\n" +
			"same origin) only what changed between OLDER and SNAP: the chunks the daemon's\n" +
			"changed-block tracking names (`snapshot diff`), or with --compare (or where tracking\n" +
			"cannot answer) the pages that differ when both are read. The stream is Ceph's rbd diff\n" +
			"v2 with a daxsnap header and a SHA-256 trailer (docs/backup.md); --rbd-v1 writes\n" +
			"plain rbd diff v1 instead, for `rbd import-diff` and `rbd merge-diff`.\n" +
			"SNAP is read over NBD as you: you need read permission on it.\n" +
			"The same snapshots always give the same stream, so an interrupted transfer resumes\n" +
			"where `receive` says: `send SNAP [--since OLDER] --resume-from N | receive VOL --resume`.\n" +
			"Progress (bytes, throughput, ETA) goes to stderr: a bar on a terminal, lines otherwise.",
		Args: args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			op := "send " + args[0]
			if progress.IsTerminal(a.out) {
				return usageError{fmt.Errorf("%s: stdout is a terminal: redirect it to a file or pipe it to `daxsnap receive`", op)}
			}
			if resumeFrom < 0 || (resumeFrom > 0 && v1) {
				return usageError{fmt.Errorf("%s: --resume-from takes a byte count of a v2 stream (not with --rbd-v1)", op)}
			}
			s := sender{a: a, snap: args[0], since: since, v1: v1, resumeFrom: resumeFrom, quiet: noProgress, compare: compare}
			if err := s.run(cmd.Context()); err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&since, "since", "", "send only the changes since OLDER, an older snapshot of the same origin")
	f.Int64Var(&resumeFrom, "resume-from", 0, "resume an interrupted transfer at this byte of the stream (as receive said)")
	f.BoolVar(&v1, "rbd-v1", false, "write plain rbd diff v1 (no checksums) for Ceph's rbd import-diff; receive refuses it")
	f.BoolVar(&compare, "compare", false, "with --since: find the changes by reading and comparing both snapshots, not from changed-block tracking")
	f.BoolVar(&noProgress, "no-progress", false, "do not report progress on stderr")
	return cmd
}

// sender writes one stream.
type sender struct {
	a          *app
	snap       string
	since      string
	v1         bool
	resumeFrom int64
	quiet      bool
	compare    bool // --compare
}

// nbdSocket is the daemon's NBD socket: beside its control socket.
func (a *app) nbdSocket() string {
	return filepath.Join(filepath.Dir(a.api().Socket()), daemon.NBDSocketName)
}

// dialNBD opens device name over NBD, saying who may when refused.
func (a *app) dialNBD(name, want string) (*nbdclient.Client, error) {
	c, err := nbdclient.Dial("unix", a.nbdSocket(), name)
	if err != nil {
		return nil, fmt.Errorf("cannot %s %s through the daemon's NBD socket (you need %s permission on it: see `daxsnap info %s`): %w", want, name, want, name, err)
	}
	return c, nil
}

func (s *sender) run(ctx context.Context) error {
	snap, err := s.a.api().Snapshot(ctx, s.snap)
	if err != nil {
		return err
	}
	h := stream.Header{To: s.snap, Size: int64(snap.Sectors) * 512}
	var old *wire.Snapshot
	if s.since != "" {
		o, err := s.a.api().Snapshot(ctx, s.since)
		if err != nil {
			return fmt.Errorf("--since: %w", err)
		}
		if o.Origin != snap.Origin {
			return usageError{fmt.Errorf("--since %s: it is a snapshot of %s, %s one of %s: send changes between snapshots of one origin", s.since, o.Origin, s.snap, snap.Origin)}
		}
		if o.Sectors != snap.Sectors {
			return fmt.Errorf("--since %s: it is %d sectors, %s is %d: the origin changed size between them; send %s in full", s.since, o.Sectors, s.snap, snap.Sectors, s.snap)
		}
		old, h.From = &o, s.since
	}
	extents := []wire.Extent{{Off: 0, Len: h.Size}}
	compare := old != nil
	if old != nil && !s.compare {
		d, err := s.a.api().SnapshotDiff(ctx, wire.SnapshotDiffRequest{From: s.since, To: s.snap})
		if err == nil && !d.Full && d.Size == h.Size {
			extents, compare = d.Extents, false
		} else {
			if err == nil {
				err = fmt.Errorf("it answered %d bytes for a %d-byte device (full %v)", d.Size, h.Size, d.Full)
			}
			fmt.Fprintf(s.a.err, "send %s: changed-block tracking cannot say what changed since %s (%v): comparing the two snapshots instead, which reads both in full\n", s.snap, s.since, err)
		}
	}
	src, err := s.a.dialNBD(s.snap, "read")
	if err != nil {
		return err
	}
	defer src.Close()
	var base *nbdclient.Client
	if compare {
		if base, err = s.a.dialNBD(s.since, "read"); err != nil {
			return err
		}
		defer base.Close()
	}
	what := "send " + s.snap
	if old != nil {
		what += " since " + s.since
	}
	var total int64
	for _, e := range extents {
		total += e.Len
	}
	if base != nil {
		total *= 2 // both are read and compared
	}
	p := progress.New(s.a.err, what, total, progress.Options{Quiet: s.quiet})
	out := newResumeWriter(s.a.out, s.resumeFrom)
	w, err := stream.NewWriter(out, h, s.v1)
	if err == nil {
		err = s.copy(ctx, w, src, base, extents, p)
	}
	if err == nil {
		err = w.Close()
	}
	if err == nil && out.skip > 0 {
		err = fmt.Errorf("--resume-from %d: the stream is only %d bytes long", s.resumeFrom, w.Written())
	}
	if err != nil {
		p.Abort()
		return err
	}
	p.Done()
	return nil
}

// copy reads the image at extents (and the base image, when comparing)
// and writes the records: pages that differ from the base (all of them
// without one), zero pages as zero records.
func (s *sender) copy(ctx context.Context, w *stream.Writer, src, base *nbdclient.Client, extents []wire.Extent, p *progress.Reporter) error {
	r := recorder{w: w}
	buf := make([]byte, sendBlock)
	var old []byte
	if base != nil {
		old = make([]byte, sendBlock)
	}
	for _, e := range extents {
		for off := e.Off; off < e.Off+e.Len; off += sendBlock {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(int64(sendBlock), e.Off+e.Len-off)
			if err := src.ReadAt(buf[:n], off); err != nil {
				return fmt.Errorf("read %s at byte %d: %w", s.snap, off, err)
			}
			p.Add(n)
			if base != nil {
				if err := base.ReadAt(old[:n], off); err != nil {
					return fmt.Errorf("read %s at byte %d: %w", s.since, off, err)
				}
				p.Add(n)
			}
			for i := int64(0); i < n; i += sendPage {
				page := buf[i:min(i+sendPage, n)]
				if base != nil && bytes.Equal(page, old[i:i+int64(len(page))]) {
					continue
				}
				if err := r.add(off+i, page); err != nil {
					return err
				}
			}
		}
	}
	return r.flush()
}

// recorder gathers adjacent pages of one kind (data or zero) into
// records of at most sendRecord bytes.
type recorder struct {
	w    *stream.Writer
	off  int64 // of the pending record
	n    int64
	zero bool
	data []byte
}

var zeroPage = make([]byte, sendPage)

func (r *recorder) add(off int64, page []byte) error {
	zero := bytes.Equal(page, zeroPage[:len(page)])
	if r.n > 0 && (off != r.off+r.n || zero != r.zero || r.n+int64(len(page)) > sendRecord) {
		if err := r.flush(); err != nil {
			return err
		}
	}
	if r.n == 0 {
		r.off, r.zero, r.data = off, zero, r.data[:0]
	}
	r.n += int64(len(page))
	if !zero {
		r.data = append(r.data, page...)
	}
	return nil
}

func (r *recorder) flush() error {
	if r.n == 0 {
		return nil
	}
	n := r.n
	r.n = 0
	if r.zero {
		return r.w.Zero(r.off, n)
	}
	return r.w.Write(r.off, r.data)
}

// resumeWriter passes a stream on from byte from on, after a resume
// banner with from and the SHA-256 of the bytes it skipped (from 0: the
// stream as it is).
type resumeWriter struct {
	w      io.Writer
	from   int64
	skip   int64 // bytes still to skip
	h      hash.Hash
	header bool // the resume banner is written
}

func newResumeWriter(w io.Writer, from int64) *resumeWriter {
	return &resumeWriter{w: w, from: from, skip: from, h: sha256.New()}
}

func (r *resumeWriter) Write(p []byte) (int, error) {
	n := len(p)
	if r.skip > 0 {
		k := min(int64(len(p)), r.skip)
		r.h.Write(p[:k])
		r.skip -= k
		p = p[k:]
		if r.skip > 0 {
			return n, nil
		}
	}
	if r.from > 0 && !r.header {
		head := binary.LittleEndian.AppendUint64([]byte(resumeBanner), uint64(r.from))
		if _, err := r.w.Write(r.h.Sum(head)); err != nil {
			return 0, err
		}
		r.header = true
	}
	if len(p) > 0 {
		if _, err := r.w.Write(p); err != nil {
			return 0, err
		}
	}
	return n, nil
}
