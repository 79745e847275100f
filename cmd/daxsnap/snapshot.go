package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/daxsnap/daxsnap/internal/progress"
	"github.com/daxsnap/daxsnap/internal/snapshots"
	"github.com/daxsnap/daxsnap/internal/wire"
	"github.com/spf13/cobra"
)

func (a *app) snapshotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Snapshots the way LVM sets them up: ORIGIN keeps its name, ORIGIN-real holds its table",
	}
	cmd.AddCommand(a.snapshotCreateCmd(), a.snapshotListCmd(), a.snapshotRemoveCmd(), a.snapshotMergeCmd(), a.snapshotExtendCmd(), a.snapshotDiffCmd())
	return cmd
}

func (a *app) snapshotCreateCmd() *cobra.Command {
	var req wire.SnapshotCreate
	var cowSize, chunk, permission string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create ORIGIN NAME [--cow FILE | --cow-size SIZE] [--chunk 4k] [--transient] [--permission r|rw] [--autoextend-threshold P [--autoextend-percent P]]",
		Short: "Take a snapshot of ORIGIN as a new device NAME; ORIGIN pauses, never fails",
		Long: "Take a snapshot of ORIGIN: its table moves to ORIGIN-real, NAME becomes\n" +
			"`snapshot /dev/mapper/ORIGIN-real COW P CHUNK` and ORIGIN becomes\n" +
			"`snapshot-origin /dev/mapper/ORIGIN-real`, all while ORIGIN is suspended.\n" +
			"A DAX origin stays DAX. Without --cow the daemon creates NAME.cow in serve's --cow-dir\n" +
			"(default: on tmpfs, /dev/shm/daxsnap-cow-UID-HASH, for an origin all in memory; STATE/cow otherwise)\n" +
			"(10% of the origin, at least 8 MiB, at most a full copy) and deletes it with the snapshot.\n" +
			"With --autoextend-threshold P the COW file grows by --autoextend-percent of its size\n" +
			"whenever it is P percent full, as LVM's snapshot_autoextend_threshold does; writes that\n" +
			"find it full meanwhile wait for the extension rather than invalidate the snapshot.",
		Args: args(2, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			op := "snapshot create " + strings.Join(args, " ")
			req.Origin, req.Name = args[0], args[1]
			switch permission {
			case "r":
				req.ReadOnly = true
			case "rw", "":
			default:
				return usageError{fmt.Errorf("%s: --permission %q: give r (read-only) or rw, as lvcreate -p takes", op, permission)}
			}
			var err error
			if cowSize != "" {
				if req.COWSize, err = parseSize(cowSize); err != nil {
					return fmt.Errorf("%s: --cow-size: %w", op, err)
				}
			}
			if chunk != "" {
				if req.ChunkSize, err = parseSize(chunk); err != nil {
					return fmt.Errorf("%s: --chunk: %w", op, err)
				}
			}
			if req.COW != "" {
				if req.COW, err = filepath.Abs(req.COW); err != nil {
					return fmt.Errorf("%s: --cow: %w", op, err)
				}
			}
			s, err := a.api().SnapshotCreate(cmd.Context(), req)
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(s)
			}
			return a.printMade(s, fmt.Sprintf("created snapshot %s of %s: COW %s, store %s, chunk %s", s.Name, s.Origin, s.COW, s.Store, formatSize(s.ChunkSize)))
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.COW, "cow", "", "existing file for the exception store (its first bytes must be zero)")
	f.StringVar(&cowSize, "cow-size", "", "size of the COW file the daemon creates, e.g. 256M")
	f.StringVar(&chunk, "chunk", "", "chunk size, a power of two such as 4k (default) to 512k")
	f.BoolVar(&req.Transient, "transient", false, "keep exceptions in memory only (store N): lost when the daemon stops")
	f.StringVarP(&permission, "permission", "p", "rw", "r: a read-only snapshot device (its writes fail), as lvcreate -s -p r")
	f.IntVar(&req.AutoextendThreshold, "autoextend-threshold", 0, "grow the COW file when it is this percent full (50 to 99; 100 for never; default: serve's)")
	f.IntVar(&req.AutoextendPercent, "autoextend-percent", 0, "grow it by this percent of its size (default 20)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) snapshotListCmd() *cobra.Command {
	var asJSON bool
	var report reportOptions
	var units string
	cmd := &cobra.Command{
		Use:     "list [ORIGIN] [-o FIELDS [--units U] [--noheadings] [--separator SEP]]",
		Aliases: []string{"ls"},
		Short:   "List snapshots: origin, COW, store, chunk size, usage and state (merge progress)",
		Long: `List snapshots: origin, COW, store, chunk size, usage and state (merge progress).

-o FIELDS prints the columns lvs would, by lvs's field names: lv_name,
origin, lv_attr (swi-a-s---: s snapshot, S merging; w or r; a active, I
invalid), lv_size (the COW's size, as lvs gives a snapshot's LSize),
origin_size, data_percent (snap_percent), chunk_size; and daxsnap's cow,
store, state. +FIELDS adds to the default (` + defaultLvsFields + `).
--units picks the size unit as lvs does: h (default), b, s, k, m, g, t
(powers of 1024) or H, K, M, G, T (powers of 1000).`,
		Args: args(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			origin := ""
			if len(args) == 1 {
				origin = args[0]
			}
			snaps, err := a.api().Snapshots(cmd.Context(), origin)
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(snaps)
			}
			if cmd.Flags().Changed("options") || units != "" || report.noHeadings || report.separator != "" {
				if len(snaps) == 0 {
					fmt.Fprint(a.out, noSnapshots)
					return nil
				}
				return formatSnapshotReport(a.out, snaps, report, units)
			}
			formatSnapshots(a.out, snaps)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	reportFlags(cmd, &report)
	cmd.Flags().StringVar(&units, "units", "", "size `UNIT` of -o's sizes: h, b, s, k, m, g, t (or H, K, M, G, T: powers of 1000)")
	return cmd
}

func (a *app) snapshotRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm"},
		Short:   "Remove a snapshot; the last one of an origin gives it back its own table",
		Args:    args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.api().SnapshotRemove(cmd.Context(), args[0])
		},
	}
}

func (a *app) snapshotExtendCmd() *cobra.Command {
	var size string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "extend NAME --size +N|N",
		Short: "Grow a snapshot's COW file (lvextend): by N with +N, to N without",
		Long: "Grow the COW file of snapshot NAME, as lvextend does for an LVM snapshot:\n" +
			"--size +256M adds 256 MiB, --size 1G makes it 1 GiB. The snapshot takes the\n" +
			"new space in at once; it never shrinks, and never grows past a full copy of\n" +
			"its origin. A COW given as a block or daxsnap device is grown by growing that device.",
		Args: args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			op := "snapshot extend " + args[0]
			var req wire.SnapshotExtend
			n, err := parseSize(strings.TrimPrefix(size, "+"))
			switch {
			case size == "":
				return fmt.Errorf("%s: --size is missing: give +N to add N bytes (e.g. +256M), or N for the new size", op)
			case err != nil:
				return fmt.Errorf("%s: --size: %w", op, err)
			case strings.HasPrefix(size, "+"):
				req.Add = n
			default:
				req.Size = n
			}
			s, err := a.api().SnapshotExtend(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(s)
			}
			fmt.Fprintf(a.out, "extended snapshot %s: COW %s is %s, %.2f%% used\n", s.Name, s.COW, formatSize(int64(s.Total)*512), s.Usage)
			return nil
		},
	}
	cmd.Flags().StringVar(&size, "size", "", "+N to add N bytes (e.g. +256M), N for the new size")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) snapshotMergeCmd() *cobra.Command {
	var noWait, deferred bool
	cmd := &cobra.Command{
		Use:   "merge NAME [--no-wait] [--deferred]",
		Short: "Merge a persistent snapshot back into its origin, with a progress bar",
		Long: "Copy the snapshot's exceptions back onto its origin, then remove the snapshot.\n" +
			"A non-DAX origin stays usable while it merges. A DAX origin cannot load\n" +
			"snapshot-merge (it has no direct access), so it stays suspended (its I/O waits)\n" +
			"while ORIGIN-merge does the work: it keeps DAX throughout.\n" +
			"With --no-wait the daemon finishes the merge in the background; Ctrl-C stops the\n" +
			"waiting, not the merge, which continues in the daemon. The progress bar draws on a\n" +
			"terminal only.\n" +
			"A merge rewrites the origin, so it is refused while the origin is in use (a loop\n" +
			"device on its FUSE file, an NBD client, a DAX mapping not given back): the error\n" +
			"names them. With --deferred it is recorded instead, and starts when the last user\n" +
			"closes, or at the next start of the daemon (LVM's \"Delaying merge\").",
		Args: args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			c := a.api()
			if noWait {
				s, err := c.SnapshotMerge(cmd.Context(), name, wire.SnapshotMerge{NoWait: true, Deferred: deferred})
				if err != nil {
					return err
				}
				if s.State == wire.SnapshotMerged {
					fmt.Fprintln(a.out, mergedLine(name, s))
					return nil
				}
				if s.MergeDeferred {
					a.printDeferred(s)
					return nil
				}
				fmt.Fprintf(a.out, "merging %s into %s%s: `daxsnap snapshot list %s` shows the progress\n", name, s.Origin, offlineNote(s), s.Origin)
				return nil
			}
			type result struct {
				s   wire.Snapshot
				err error
			}
			done := make(chan result, 1)
			go func() {
				s, err := c.SnapshotMerge(cmd.Context(), name, wire.SnapshotMerge{Deferred: deferred})
				done <- result{s, err}
			}()
			// Ctrl-C stops the waiting, not the merge: the daemon goes on.
			intr := make(chan os.Signal, 1)
			signal.Notify(intr, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(intr)
			bar := progressBar{w: a.err, on: progress.IsTerminal(a.err)}
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-intr:
					bar.end()
					s, err := c.Snapshot(cmd.Context(), name)
					return interruptedMerge(name, s, err)
				case r := <-done:
					if r.err != nil {
						bar.end()
						return r.err
					}
					if r.s.MergeDeferred {
						bar.end()
						a.printDeferred(r.s)
						return nil
					}
					bar.show(name, r.s.Origin, &wire.MergeProgress{Percent: 100})
					bar.end()
					fmt.Fprintln(a.out, mergedLine(name, r.s))
					return nil
				case <-tick.C:
					if s, err := c.Snapshot(cmd.Context(), name); err == nil && s.Merge != nil {
						bar.show(name, s.Origin, s.Merge)
					}
				}
			}
		},
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the merge has started")
	cmd.Flags().BoolVar(&deferred, "deferred", false, "if the origin is in use, merge when its last user closes (or at the next start) instead of refusing")
	return cmd
}

// mergedLine reports a finished merge, with when it finished (a merge
// started with --no-wait may have finished long before).
func mergedLine(name string, s wire.Snapshot) string {
	line := fmt.Sprintf("merged %s into %s", name, s.Origin)
	if !s.MergedAt.IsZero() {
		line += fmt.Sprintf(" (finished at %s)", s.MergedAt.Local().Format("2006-01-02 15:04:05 MST"))
	}
	return line
}

func (a *app) printDeferred(s wire.Snapshot) {
	fmt.Fprintf(a.out, "merge of %s into %s deferred: %s is in use; the merge starts when its last user closes, or at the next start of the daemon (`daxsnap snapshot list %s` shows it)\n",
		s.Name, s.Origin, s.Origin, s.Origin)
}

func offlineNote(s wire.Snapshot) string {
	if s.Merge != nil && s.Merge.Offline {
		return fmt.Sprintf(" offline on %s (%s is DAX-capable: it stays suspended until the merge is done)", s.Merge.Device, s.Origin)
	}
	return ""
}

// interruptedMerge says what became of a merge whose waiting was
// interrupted (Ctrl-C), given the snapshot as the daemon now has it.
func interruptedMerge(name string, s wire.Snapshot, err error) error {
	switch {
	case err != nil:
		return fmt.Errorf("snapshot merge %s: interrupted; a merge the daemon started goes on without this command (`daxsnap snapshot list` shows it): %w", name, err)
	case s.State == wire.SnapshotMerging && s.Merge != nil:
		return fmt.Errorf("snapshot merge %s: interrupted; the merge continues in the daemon (%.1f%% done): `daxsnap snapshot list %s` shows its progress", name, s.Merge.Percent, s.Origin)
	case s.State == wire.SnapshotMerged:
		return fmt.Errorf("snapshot merge %s: interrupted, but the merge had finished: %s", name, mergedLine(name, s))
	case s.MergeDeferred:
		return fmt.Errorf("snapshot merge %s: interrupted; the merge is deferred until %s is closed (`daxsnap snapshot list %s` shows it)", name, s.Origin, s.Origin)
	}
	return fmt.Errorf("snapshot merge %s: interrupted before the daemon started the merge (the snapshot is %s): run it again to merge", name, snapshotState(s))
}

// progressBar draws one line, redrawn in place, on a terminal only (on
// anything else it draws nothing).
type progressBar struct {
	w     io.Writer
	on    bool
	drawn bool
}

func (b *progressBar) show(name, origin string, p *wire.MergeProgress) {
	if !b.on {
		return
	}
	const width = 30
	n := int(p.Percent * width / 100)
	n = min(max(n, 0), width)
	fmt.Fprintf(b.w, "\rmerging %s into %s [%s%s] %5.1f%% (%d chunks left)", name, origin,
		strings.Repeat("#", n), strings.Repeat(".", width-n), p.Percent, p.Remaining)
	b.drawn = true
}

func (b *progressBar) end() {
	if b.drawn {
		fmt.Fprintln(b.w)
		b.drawn = false
	}
}

// noSnapshots is what snapshot list prints when there are none.
const noSnapshots = "No snapshots: take one with `daxsnap snapshot create ORIGIN NAME`\n"

// formatSnapshots prints snapshot list.
func formatSnapshots(w io.Writer, snaps []wire.Snapshot) {
	if len(snaps) == 0 {
		io.WriteString(w, noSnapshots)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tORIGIN\tSTORE\tCHUNK\tUSAGE\tSTATE\tCOW")
	for _, s := range snaps {
		cow := s.COW
		if s.COWOwned {
			cow += " (daxsnap's)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Origin, s.Store, formatSize(s.ChunkSize),
			snapshotUsage(s), snapshotState(s), cow)
	}
	tw.Flush()
	for _, s := range snaps {
		if s.Note != "" {
			fmt.Fprintf(w, "%s: %s\n", s.Name, s.Note)
		}
		if s.Merge != nil && s.Merge.Error != "" {
			fmt.Fprintf(w, "%s: merge: %s\n", s.Name, s.Merge.Error)
		}
	}
}

func snapshotUsage(s wire.Snapshot) string {
	if s.Total == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", s.Usage)
}

func snapshotState(s wire.Snapshot) string {
	switch {
	case s.Merge != nil && s.State == wire.SnapshotMerging:
		where := ""
		if s.Merge.Offline {
			where = " offline"
		}
		return fmt.Sprintf("merging%s %.1f%%", where, s.Merge.Percent)
	case s.State == wire.SnapshotMergeFailed:
		return "merge failed"
	case s.MergeDeferred && s.State == wire.SnapshotActive:
		return "merge deferred"
	}
	return s.State
}

func (a *app) cowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cow",
		Short: "COW devices (exception stores in the kernel's persistent format)",
	}
	var asJSON, summary bool
	inspect := &cobra.Command{
		Use:   "inspect FILE [--summary]",
		Short: "Print a COW device's header, metadata areas and exceptions (offline, no daemon)",
		Long: "Print a COW device's header, metadata areas, exceptions and usage, reading it offline\n" +
			"as the kernel would load it (no daemon needed). --summary leaves out the line per\n" +
			"exception. A damaged device is reported as far as it could be read, and the error\n" +
			"goes to stderr.",
		Args: args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := snapshots.InspectCOW(args[0])
			if r == nil {
				return err
			}
			if err != nil {
				err = fmt.Errorf("cow %w", err) // "cow inspect PATH: what is wrong"
			}
			if asJSON {
				// The report names its problem; the error goes to stderr too.
				if jerr := a.printJSON(snapshots.COWReportWire(r)); jerr != nil {
					return jerr
				}
				return err
			}
			r.Problem = "" // said once, on stderr
			write := r.WriteText
			if summary {
				write = r.WriteSummary
			}
			if werr := write(a.out); werr != nil {
				return werr
			}
			return err
		},
	}
	inspect.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	inspect.Flags().BoolVar(&summary, "summary", false, "leave out the line per exception")
	cmd.AddCommand(inspect, a.cowAdoptCmd())
	return cmd
}

func (a *app) cowAdoptCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "adopt FILE ORIGIN NAME",
		Short: "Make snapshot NAME of ORIGIN again from a COW that holds one (e.g. in STATE/lost+found)",
		Long: "Bring back the snapshot a persistent COW holds, over ORIGIN, as `lvconvert -s ORIGIN COW`\n" +
			"does: the COW keeps its exceptions, and its header gives the chunk size. The daemon\n" +
			"moves COW files it cannot account for (the state file lost their snapshot) to\n" +
			"STATE/lost+found and says so when it starts; adopting one moves it back to\n" +
			"STATE/cow/NAME.cow. The snapshot is exact only if ORIGIN was not written since the\n" +
			"COW was last in use. `daxsnap cow inspect FILE` shows what a COW holds.",
		Args: args(3, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			op := "cow adopt " + strings.Join(args, " ")
			file, err := filepath.Abs(args[0])
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			s, err := a.api().SnapshotCreate(cmd.Context(), wire.SnapshotCreate{Origin: args[1], Name: args[2], COW: file, Adopt: true})
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(s)
			}
			return a.printMade(s, fmt.Sprintf("adopted %s as snapshot %s of %s: COW %s, chunk %s, %d exceptions",
				args[0], s.Name, s.Origin, s.COW, formatSize(s.ChunkSize), s.Exceptions))
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printMade prints a snapshot a verb made for people: a headline and the
// daemon's note.
func (a *app) printMade(s wire.Snapshot, headline string) error {
	fmt.Fprintln(a.out, headline)
	if s.Note != "" {
		fmt.Fprintf(a.out, "note: %s\n", s.Note)
	}
	return nil
}
