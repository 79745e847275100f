package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/daxsnap/daxsnap/internal/export/nbd/nbdclient"
	"github.com/daxsnap/daxsnap/internal/progress"
	"github.com/daxsnap/daxsnap/internal/stream"
	"github.com/daxsnap/daxsnap/internal/wire"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func (a *app) receiveCmd() *cobra.Command {
	r := receiver{a: a}
	var cowSize string
	cmd := &cobra.Command{
		Use:   "receive VOL [--snapshot NAME] [--resume] < STREAM",
		Short: "Apply a stream of `daxsnap send` to volume VOL and snapshot it; nothing changes unless all of it checks out",
		Long: "Read a stream of `daxsnap send` from stdin into a spool file, verify all of it (its\n" +
			"SHA-256, its records, VOL's size and, for an incremental stream, that VOL holds the\n" +
			"snapshot it applies on, unchanged since), then write it to VOL over NBD and take\n" +
			"snapshot NAME of VOL (default: the sender's snapshot name), which the next\n" +
			"incremental stream applies on. A truncated, corrupt, replayed or out-of-order stream\n" +
			"is refused and VOL is left as it was.\n" +
			"A stream cut short is kept in the spool: `daxsnap send ... --resume-from N |\n" +
			"daxsnap receive VOL --resume` sends only the rest (receive prints the command);\n" +
			"`daxsnap send ... | daxsnap receive VOL --resume` sends it all again but checks the\n" +
			"part kept against it and writes only the rest (after a receive that was killed). An\n" +
			"apply that was interrupted is finished by `daxsnap receive VOL --resume < /dev/null`.\n" +
			"VOL is written over NBD as you: you need write permission on it.",
		Args: args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r.vol = args[0]
			op := "receive " + r.vol
			if cowSize != "" {
				var err error
				if r.cowSize, err = parseSize(cowSize); err != nil {
					return usageError{fmt.Errorf("%s: --cow-size: %w", op, err)}
				}
			}
			if err := r.run(cmd.Context()); err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&r.name, "snapshot", "", "name of the snapshot of VOL taken after the stream is applied (default: the sender's)")
	f.BoolVar(&r.resume, "resume", false, "continue an interrupted receive: stdin is the output of send --resume-from N, the whole stream again, or empty to finish an interrupted apply")
	f.StringVar(&r.spoolDir, "spool-dir", "", "directory of the spool file that holds the stream until it is verified (default $TMPDIR or /tmp)")
	f.StringVar(&cowSize, "cow-size", "", "COW size of the snapshot taken (default: the daemon's)")
	f.BoolVar(&r.quiet, "no-progress", false, "do not report progress on stderr")
	return cmd
}

// receiver applies one stream to one volume.
type receiver struct {
	a        *app
	vol      string
	name     string
	resume   bool
	spoolDir string
	cowSize  int64
	quiet    bool
}

// applyHook, when set (by tests), runs before each record is written; an
// error stops the apply there, as a crash would.
var applyHook func(record int) error

// received is a verified stream in its spool.
type received struct {
	hdr  stream.Header
	sum  stream.Summary
	size int64 // of the spool
}

func (r *receiver) run(ctx context.Context) error {
	info, err := r.a.api().Info(ctx, r.vol)
	if err != nil {
		return err
	}
	dir := r.spoolDir
	if dir == "" {
		dir = os.TempDir()
	}
	path := filepath.Join(dir, "daxsnap-receive-"+url.PathEscape(r.vol)+".stream")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w (choose another --spool-dir)", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("another receive into %s is running (it holds %s): wait for it", r.vol, path)
	}
	rs, err := r.spool(f, path)
	if err != nil {
		return err
	}
	marker := path + ".applying"
	if err := r.check(ctx, rs, info, marker); err != nil {
		os.Remove(path)
		os.Remove(marker)
		return err
	}
	if err := r.apply(ctx, f, rs, marker); err != nil {
		return fmt.Errorf("%w: %s is partly written; finish with `daxsnap receive %s --resume < /dev/null`", err, r.vol, r.vol)
	}
	name := r.snapshotName(rs.hdr)
	if _, err := r.a.api().SnapshotCreate(ctx, wire.SnapshotCreate{Origin: r.vol, Name: name, COWSize: r.cowSize}); err != nil {
		return fmt.Errorf("the stream is applied to %s, but snapshot %s could not be taken: %w: take it with `daxsnap snapshot create %s %s` before the next incremental receive", r.vol, name, err, r.vol, name)
	}
	os.Remove(marker)
	os.Remove(path)
	kind := "full"
	if rs.hdr.Incremental() {
		kind = "incremental since " + rs.hdr.From
	}
	fmt.Fprintf(r.a.out, "received %s (%s: %d records, %s of data, %s of zeroes) into %s as snapshot %s\n",
		rs.hdr.To, kind, rs.sum.Records, progress.Bytes(int64(rs.sum.DataBytes)), progress.Bytes(int64(rs.sum.Zeroes)), r.vol, name)
	return nil
}

func (r *receiver) snapshotName(h stream.Header) string {
	if r.name != "" {
		return r.name
	}
	return h.To
}

// spool reads stdin into the spool file f (after what it holds, with
// --resume) while verifying the stream; a stream cut short is kept for a
// resume, a corrupt one is dropped.
func (r *receiver) spool(f *os.File, path string) (received, error) {
	var kept int64
	in := bufio.NewReaderSize(r.a.in, 64<<10)
	if r.resume {
		var err error
		if kept, err = r.resumeFrom(f, path, in); err != nil {
			return received{}, err
		}
	} else if err := f.Truncate(0); err != nil {
		return received{}, fmt.Errorf("spool %s: %w", path, err)
	}
	if _, err := f.Seek(kept, io.SeekStart); err != nil {
		return received{}, err
	}
	p := progress.New(r.a.err, "receive "+r.vol, 0, progress.Options{Quiet: r.quiet})
	p.SetDone(kept)
	src := io.MultiReader(io.NewSectionReader(f, 0, kept), io.TeeReader(p.Reader(in), f))
	sr, err := stream.NewReader(src)
	var rs received
	if err == nil {
		rs.hdr = sr.Header()
		p.SetTotal(rs.hdr.Length)
		for err == nil {
			_, err = sr.Next()
		}
		if err == io.EOF {
			err = nil
		}
		rs.sum = sr.Summary()
	}
	if err != nil {
		p.Abort()
	} else {
		p.Done()
	}
	if serr := f.Sync(); serr != nil && err == nil {
		err = fmt.Errorf("spool %s: %w", path, serr)
	}
	var serr error
	if rs.size, serr = spoolSize(f, path); serr != nil && (err == nil || errors.Is(err, stream.ErrTruncated)) {
		os.Remove(path) // how much came is unknown: nothing to resume from
		return rs, fmt.Errorf("%w; %s is unchanged: send the whole stream again", serr, r.vol)
	}
	switch {
	case errors.Is(err, stream.ErrTruncated):
		send := "daxsnap send SNAP [--since OLDER]"
		if rs.hdr.To != "" {
			send = "daxsnap send " + rs.hdr.To
			if rs.hdr.From != "" {
				send += " --since " + rs.hdr.From
			}
		}
		return rs, fmt.Errorf("%w; %s is unchanged: the %d bytes that came are kept in %s: send the rest with `%s --resume-from %d | daxsnap receive %s --resume`",
			err, r.vol, rs.size, path, send, rs.size, r.vol)
	case err != nil:
		os.Remove(path)
		return rs, fmt.Errorf("%w; %s is unchanged: send the stream again", err, r.vol)
	}
	return rs, nil
}

// spoolSize is the length of the spool file f, at path.
func spoolSize(f *os.File, path string) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("spool %s: cannot tell how much of the stream it holds: %w", path, err)
	}
	return st.Size(), nil
}

// resumeFrom checks that stdin continues the stream kept in f: a resume
// banner with the length and SHA-256 of what f holds. Empty stdin resumes
// an interrupted apply of a complete spool. It returns f's length.
func (r *receiver) resumeFrom(f *os.File, path string, in *bufio.Reader) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	kept := st.Size()
	if kept == 0 {
		os.Remove(path)
		return 0, fmt.Errorf("--resume: no interrupted receive into %s to resume (%s is empty): receive without --resume", r.vol, path)
	}
	if _, err := in.Peek(1); err == io.EOF {
		return kept, nil // no more stream: verify and apply what is kept
	}
	if b, _ := in.Peek(len(stream.BannerV2)); string(b) == stream.BannerV2 {
		return kept, r.skipKept(f, path, kept, in)
	}
	head := make([]byte, len(resumeBanner)+8+sha256.Size)
	if _, err := io.ReadFull(in, head); err != nil || string(head[:len(resumeBanner)]) != resumeBanner {
		return 0, fmt.Errorf("--resume: stdin is not what `daxsnap send ... --resume-from %d` writes; %s is unchanged", kept, r.vol)
	}
	at := int64(binary.LittleEndian.Uint64(head[len(resumeBanner):]))
	if at != kept {
		return 0, fmt.Errorf("--resume: the stream resumes at byte %d, but %d bytes are kept in %s: send with --resume-from %d; %s is unchanged", at, kept, path, kept, r.vol)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, kept)); err != nil {
		return 0, err
	}
	if !bytes.Equal(h.Sum(nil), head[len(resumeBanner)+8:]) {
		return 0, fmt.Errorf("--resume: the stream that resumes is not the one kept in %s (another snapshot or --since?): send the one receive asked for; %s is unchanged", path, r.vol)
	}
	return kept, nil
}

// skipKept passes over the first kept bytes of a whole stream sent again,
// checking that they are what the spool f holds: re-running the same
// `send | receive --resume` resumes without the byte count.
func (r *receiver) skipKept(f *os.File, path string, kept int64, in io.Reader) error {
	mine := bufio.NewReaderSize(io.NewSectionReader(f, 0, kept), 64<<10)
	a, b := make([]byte, 64<<10), make([]byte, 64<<10)
	for done := int64(0); done < kept; {
		n := int(min(int64(len(a)), kept-done))
		if _, err := io.ReadFull(in, a[:n]); err != nil {
			return fmt.Errorf("--resume: the stream ended after %d bytes, before the %d kept in %s; %s is unchanged", done, kept, path, r.vol)
		}
		if _, err := io.ReadFull(mine, b[:n]); err != nil {
			return err
		}
		if !bytes.Equal(a[:n], b[:n]) {
			return fmt.Errorf("--resume: the stream that resumes is not the one kept in %s (it differs within its first %d bytes: another snapshot or --since?); %s is unchanged", path, kept, r.vol)
		}
		done += int64(n)
	}
	return nil
}

// check refuses a stream that does not apply to the volume as it is:
// another size, a snapshot name it already has (a replay), or for an
// incremental stream no snapshot FROM, or a volume written since FROM.
func (r *receiver) check(ctx context.Context, rs received, info wire.Info, marker string) error {
	h := rs.hdr
	keep := "; " + r.vol + " is unchanged"
	if size := int64(info.Sectors) * 512; size != h.Size {
		return fmt.Errorf("the stream is of a %d-byte image, %s is %d bytes: receive into a volume of %d sectors%s", h.Size, r.vol, size, h.Size/512, keep)
	}
	snaps, err := r.a.api().Snapshots(ctx, r.vol)
	if err != nil {
		return err
	}
	var names []string
	for _, s := range snaps {
		names = append(names, s.Name)
	}
	name := r.snapshotName(h)
	if slices.Contains(names, name) {
		return fmt.Errorf("%s already has snapshot %s: this stream was received before (a replay?)%s", r.vol, name, keep)
	}
	if _, err := r.a.api().Info(ctx, name); err == nil {
		return fmt.Errorf("a device %s exists: receive with --snapshot ANOTHER-NAME%s", name, keep)
	}
	if !h.Incremental() {
		return nil
	}
	if m, err := os.ReadFile(marker); err == nil && string(m) == hex.EncodeToString(rs.sum.Sum[:]) {
		return nil // this stream's apply was interrupted: finish it
	}
	i := slices.Index(names, h.From)
	if i < 0 {
		have := "none"
		if len(names) > 0 {
			have = strings.Join(names, ", ")
		}
		return fmt.Errorf("the stream applies on snapshot %s, which %s does not have (its snapshots: %s): receive the streams in the order they were sent, from a full one%s", h.From, r.vol, have, keep)
	}
	if s := snaps[i]; s.Exceptions != 0 || s.State != wire.SnapshotActive {
		return fmt.Errorf("%s changed since its snapshot %s (%d chunks written, snapshot %s): the stream applies on %s as it was: merge %s back into %s first, or receive a full stream%s",
			r.vol, h.From, s.Exceptions, s.State, h.From, h.From, r.vol, keep)
	}
	return nil
}

// applyConns is how many NBD connections an apply writes through at
// once (records are disjoint, so their order does not matter).
const applyConns = 4

// piece is one NBD write of an apply: n bytes at off, data or zeroes.
type piece struct {
	off  int64
	data []byte // nil: zeroes
	n    int64
}

// apply writes the verified stream in f to the volume over NBD.
func (r *receiver) apply(ctx context.Context, f *os.File, rs received, marker string) error {
	if err := os.WriteFile(marker, []byte(hex.EncodeToString(rs.sum.Sum[:])), 0o600); err != nil {
		return fmt.Errorf("mark the apply in %s: %w", marker, err)
	}
	var conns []*nbdclient.Client
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range applyConns {
		c, err := r.a.dialNBD(r.vol, "write")
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	sr, err := stream.NewReader(io.NewSectionReader(f, 0, rs.size))
	if err != nil {
		return err
	}
	total := int64(rs.sum.DataBytes + rs.sum.Zeroes)
	p := progress.New(r.a.err, "apply to "+r.vol, total, progress.Options{Quiet: r.quiet})
	var (
		failed   atomic.Pointer[error]
		wg       sync.WaitGroup
		work     = make(chan piece, 2*applyConns)
		bufs     = sync.Pool{New: func() any { return make([]byte, sendRecord) }}
		zeroes   = make([]byte, sendRecord)
		fail     = func(err error) { failed.CompareAndSwap(nil, &err) }
		stopping = func() bool { return failed.Load() != nil }
	)
	for _, c := range conns {
		wg.Go(func() {
			for w := range work {
				if stopping() {
					continue
				}
				data := zeroes[:w.n]
				if w.data != nil {
					data = w.data
				}
				if err := c.WriteAt(data, w.off); err != nil {
					fail(fmt.Errorf("write %s at byte %d: %w", r.vol, w.off, err))
				}
				if w.data != nil {
					bufs.Put(w.data[:cap(w.data)])
				}
				p.Add(w.n)
			}
		})
	}
	for i := 0; !stopping(); i++ {
		if err := ctx.Err(); err != nil {
			fail(err)
			break
		}
		rec, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err == nil && applyHook != nil {
			err = applyHook(i)
		}
		if err != nil {
			fail(err)
			break
		}
		for off := int64(0); off < rec.Len; off += sendRecord {
			w := piece{off: rec.Off + off, n: min(rec.Len-off, sendRecord)}
			if !rec.Zero {
				w.data = bufs.Get().([]byte)[:w.n]
				copy(w.data, rec.Data[off:])
			}
			work <- w
		}
	}
	close(work)
	wg.Wait()
	for _, c := range conns {
		if err := c.Flush(); err != nil {
			fail(fmt.Errorf("flush %s: %w", r.vol, err))
		}
	}
	if err := failed.Load(); err != nil {
		p.Abort()
		return *err
	}
	p.Done()
	return nil
}
