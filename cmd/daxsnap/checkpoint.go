package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"github.com/daxsnap/daxsnap/internal/wire"
	"github.com/spf13/cobra"
)

// checkpointCmd is `daxsnap checkpoint VOL` (take one now and wait) and
// the parent of the checkpoint verbs: enable, disable, status, inspect
// (docs/checkpoint.md).
func (a *app) checkpointCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "checkpoint VOL",
		Short: "Make memory volumes durable: take a checkpoint of VOL now and wait until it is on disk",
		Long: "Checkpoints write consistent cuts of a memory volume to an image on disk, only what\n" +
			"changed since the last one; after a reboot `daxsnap serve` brings the volume back from\n" +
			"the newest complete one. `checkpoint enable` starts them; `checkpoint VOL` takes one now.",
		Args: args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			du, err := a.api().CheckpointNow(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(du)
			}
			if l := du.Last; l != nil {
				fmt.Fprintf(a.out, "%s: checkpoint %d complete: cut at %s, %s written back in %d ms\n",
					du.Device, l.Seq, l.Time.Local().Format(time.RFC3339Nano), formatSize(l.Bytes), l.DurationMS)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(a.checkpointEnableCmd(), a.checkpointDisableCmd(), a.checkpointStatusCmd(), a.checkpointInspectCmd())
	return cmd
}

func (a *app) checkpointEnableCmd() *cobra.Command {
	var req wire.CheckpointEnable
	var interval time.Duration
	var buffer string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "enable VOL --to PATH|s3://BUCKET/PREFIX [--endpoint URL] [--interval 30s]",
		Short: "Checkpoint VOL to PATH (a file on a disk file system, or a block device) or to an object store every interval",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval < 0 || interval > 0 && interval < 10*time.Millisecond {
				return usageError{fmt.Errorf("checkpoint enable: --interval %s: give 10ms or more", interval)}
			}
			req.IntervalMS = interval.Milliseconds()
			if buffer != "" {
				n, err := parseSize(buffer)
				if err != nil {
					return usageError{fmt.Errorf("checkpoint enable: --buffer: %w", err)}
				}
				req.BufferBytes = n
			}
			du, err := a.api().CheckpointEnable(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(du)
			}
			if du.Journal == "" { // an object store
				fmt.Fprintf(a.out, "%s: checkpointed to %s every %s; the first checkpoint writes all of the volume (into a new place, all but its chunks of zeroes)\n",
					du.Device, du.Path, time.Duration(du.IntervalMS)*time.Millisecond)
				return nil
			}
			fmt.Fprintf(a.out, "%s: checkpointed to %s (journal %s) every %s; the first checkpoint writes all of the volume (into a new image, all but its chunks of zeroes)\n",
				du.Device, du.Path, du.Journal, time.Duration(du.IntervalMS)*time.Millisecond)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Path, "to", "", "the image: a file on a disk file system (made if missing) or a block device; or s3://BUCKET/PREFIX")
	f.StringVar(&req.Endpoint, "endpoint", "", "with --to s3://...: the object store's URL (default AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, or AWS S3); the daemon's credentials are used")
	f.StringVar(&req.Journal, "journal", "", "the image's redo journal (default PATH.journal)")
	f.DurationVar(&interval, "interval", time.Duration(wire.DefaultCheckpointIntervalMS)*time.Millisecond, "time between checkpoints")
	f.StringVar(&buffer, "buffer", "", "cap of the copy-on-write buffer during a checkpoint, such as 64M (default: the engine's)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	cmd.MarkFlagRequired("to")
	return cmd
}

func (a *app) checkpointDisableCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "disable VOL",
		Short: "Stop checkpointing VOL; the image keeps its checkpoints",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.api().CheckpointDisable(cmd.Context(), args[0])
		},
	}
}

func (a *app) checkpointStatusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status VOL",
		Short: "Say how durable VOL is: volatile, or checkpointed and how recently",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			du, err := a.api().CheckpointGet(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(du)
			}
			fmt.Fprintf(a.out, "%s: %s\n", du.Device, du.Text)
			if r := du.Restored; r != nil {
				fmt.Fprintf(a.out, "%s: restored at the daemon's start from checkpoint %d (cut at %s)\n", du.Device, r.Seq, r.Time.Local().Format(time.RFC3339))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) checkpointInspectCmd() *cobra.Command {
	var opt image.Options
	var asJSON, summary bool
	cmd := &cobra.Command{
		Use:   "inspect PATH [--summary] [--journal P] [--json]",
		Short: "Print which checkpoint a durable image holds and what waits in its journal (offline, no daemon)",
		Long: "Print what a durable image PATH and its journal (PATH.journal, or --journal) hold:\n" +
			"both header slots, the last complete checkpoint, the checkpoint the raw image file\n" +
			"holds now, and each journal segment of a checkpoint not yet applied to it, with every\n" +
			"checksum checked. It changes nothing: opening the image applies such a checkpoint.\n" +
			"--summary leaves out the line per segment. A damaged journal is reported as far as it\n" +
			"could be read, and the error goes to stderr.",
		Args: args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.HasPrefix(args[0], "s3://") {
				return fmt.Errorf("checkpoint inspect: %s is an object store, which inspect does not read: its checkpoints are the manifests %s/checkpoints/VOL/SEQ.json (list them with `aws s3 ls %s/checkpoints/VOL/`); `daxsnap checkpoint status VOL` names the newest", args[0], strings.TrimSuffix(args[0], "/"), strings.TrimSuffix(args[0], "/"))
			}
			r, err := image.Inspect(args[0], opt)
			if err != nil {
				err = fmt.Errorf("checkpoint inspect: %w", err)
				if len(r.Slots) == 0 {
					return err // the files could not be read: no report
				}
			}
			if asJSON {
				// The report names its problem; the error goes to stderr too.
				if jerr := a.printJSON(r); jerr != nil {
					return jerr
				}
				return err
			}
			r.Problem = "" // said once, on stderr
			if werr := r.Write(a.out, summary); werr != nil {
				return werr
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.JournalPath, "journal", "", "the journal's path (default PATH.journal; required for a block device)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.BoolVar(&summary, "summary", false, "leave out the line per journal segment")
	return cmd
}
