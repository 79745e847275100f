package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/daxsnap/daxsnap/internal/backup"
	"github.com/daxsnap/daxsnap/internal/export/nbd/nbdclient"
	"github.com/daxsnap/daxsnap/internal/progress"
	"github.com/daxsnap/daxsnap/internal/wire"
	"github.com/spf13/cobra"
)

// s3Flags are the object store flags every backup verb takes.
type s3Flags struct {
	endpoint, region   string
	noProgress, asJSON bool
}

func (f *s3Flags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.endpoint, "endpoint", "", "S3 endpoint URL, e.g. http://127.0.0.1:9000 for MinIO (default $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, else AWS S3)")
	fl.StringVar(&f.region, "region", "", "S3 region (default $AWS_REGION, $AWS_DEFAULT_REGION)")
	fl.BoolVar(&f.noProgress, "no-progress", false, "draw no progress bar or lines")
	fl.BoolVar(&f.asJSON, "json", false, "print JSON")
}

func (f *s3Flags) store(loc backup.Location) (*backup.Store, error) {
	return backup.Open(loc, backup.Config{Endpoint: f.endpoint, Region: f.region})
}

// phases draws one progress reporter per phase of a backup or restore.
type phases struct {
	a     *app
	what  string
	quiet bool
	phase string
	r     *progress.Reporter
}

func (p *phases) update(pr backup.Progress) {
	if p.phase != pr.Phase {
		p.done()
		p.phase = pr.Phase
		p.r = progress.New(p.a.err, p.what+": "+pr.Phase, pr.Total, progress.Options{Quiet: p.quiet})
	}
	p.r.SetTotal(pr.Total)
	p.r.SetDone(pr.Done)
	p.r.Add(0)
}

func (p *phases) done() {
	if p.r != nil {
		p.r.Done()
		p.r = nil
	}
}

func (p *phases) abort() {
	if p.r != nil {
		p.r.Abort()
	}
}

func (a *app) backupCmd() *cobra.Command {
	var f s3Flags
	var to, since string
	var workers int
	cmd := &cobra.Command{
		Use:   "backup SNAPSHOT --to s3://BUCKET/PREFIX [--since OLDER]",
		Short: "Store a snapshot in S3-compatible object storage, incrementally with --since",
		Long: "Read snapshot SNAPSHOT over NBD and store it under s3://BUCKET/PREFIX as\n" +
			"content-addressed objects (SHA-256, at most 2 MiB) and a manifest, written last.\n" +
			"Objects already there are not sent again, so an interrupted backup resumes where\n" +
			"it stopped when run again. With --since OLDER (a snapshot of the same origin backed\n" +
			"up at the same place) only what changed since OLDER is read and sent.\n" +
			"Credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ~/.aws/credentials\n" +
			"(AWS_PROFILE), or an instance role; --endpoint for MinIO, Ceph or SeaweedFS.\n" +
			"docs/backup.md describes the layout.",
		Args: args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			op := "backup " + name
			if to == "" {
				return usageError{fmt.Errorf("%s: --to is missing: give s3://BUCKET/PREFIX", op)}
			}
			loc, err := backup.ParseURL(to)
			if err != nil {
				return usageError{fmt.Errorf("%s: --to: %w", op, err)}
			}
			store, err := f.store(loc)
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			snap, err := a.findSnapshot(cmd.Context(), name)
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			var changed []backup.Range
			if since != "" {
				if _, err := a.findSnapshot(cmd.Context(), since); err != nil {
					return fmt.Errorf("%s: --since: %w", op, err)
				}
				changed, err = a.changedExtents(cmd.Context(), since, name)
				if err != nil {
					return fmt.Errorf("%s: --since %s: %w", op, since, err)
				}
			}
			res, err := a.overNBD(&f, op, name, "read", func(nbd *nbdclient.Client, progress func(backup.Progress)) (*backup.Result, error) {
				return store.Backup(cmd.Context(), backup.Request{Name: name, Origin: snap.Origin, Source: nbd,
					Since: since, Changed: changed, Workers: workers, Progress: progress})
			})
			if err != nil || f.asJSON {
				return a.printResult(loc, res, err)
			}
			kind := "full"
			if since != "" {
				kind = "incremental since " + since
			}
			fmt.Fprintf(a.out, "backed up %s to %s/%s (%s): read %s, sent %s in %d new of %d objects, manifest %s\n",
				name, loc, "snapshots/"+name+".json", kind, formatSize(res.Read), formatSize(res.Sent), res.Uploaded, res.Objects, formatSize(res.ManifestBytes))
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "where to store it: s3://BUCKET/PREFIX")
	cmd.Flags().StringVar(&since, "since", "", "an older snapshot of the same origin, backed up at the same place: send only what changed since")
	cmd.Flags().IntVar(&workers, "jobs", 4, "uploads at once")
	f.add(cmd)
	cmd.AddCommand(a.backupListCmd())
	return cmd
}

// overNBD runs fn on an NBD connection to export dev, opened to want
// ("read", "write"), drawing its progress.
func (a *app) overNBD(f *s3Flags, op, dev, want string, fn func(*nbdclient.Client, func(backup.Progress)) (*backup.Result, error)) (*backup.Result, error) {
	nbd, err := a.dialNBD(dev, want)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer nbd.Close()
	p := &phases{a: a, what: op, quiet: f.noProgress}
	res, err := fn(nbd, p.update)
	if err != nil {
		p.abort()
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	p.done()
	return res, nil
}

// printResult prints res as JSON, or returns err.
func (a *app) printResult(loc backup.Location, res *backup.Result, err error) error {
	if err != nil {
		return err
	}
	return a.printJSON(backupReport(loc, res))
}

// backupJSON is what backup and restore print with --json.
type backupJSON struct {
	Snapshot      string `json:"snapshot"`
	Location      string `json:"location"`
	Size          int64  `json:"size"`
	Parent        string `json:"parent,omitempty"`
	Read          int64  `json:"read_bytes"`
	Sent          int64  `json:"sent_bytes"`
	Objects       int    `json:"objects"`
	Uploaded      int    `json:"new_objects"`
	Present       int    `json:"present_objects,omitempty"` // restore --resume: already on the volume
	ManifestBytes int64  `json:"manifest_bytes"`
}

func backupReport(loc backup.Location, res *backup.Result) backupJSON {
	m := res.Manifest
	return backupJSON{Snapshot: m.Name, Location: loc.String(), Size: m.Size, Parent: m.Parent, Read: res.Read, Sent: res.Sent,
		Objects: res.Objects, Uploaded: res.Uploaded, Present: res.Present, ManifestBytes: res.ManifestBytes}
}

// findSnapshot returns the daemon's snapshot name.
func (a *app) findSnapshot(ctx context.Context, name string) (wire.Snapshot, error) {
	s, err := a.api().Snapshot(ctx, name)
	if err != nil {
		return wire.Snapshot{}, fmt.Errorf("%w: back up a snapshot (`daxsnap snapshot list` shows them), which does not change while it is read", err)
	}
	return s, nil
}

// changedExtents asks the daemon which extents changed from snapshot since
// to snapshot name (`snapshot diff`). A pair it cannot answer exactly is
// refused, never read whole or short.
func (a *app) changedExtents(ctx context.Context, since, name string) ([]backup.Range, error) {
	d, err := a.api().SnapshotDiff(ctx, wire.SnapshotDiffRequest{From: since, To: name})
	if err != nil {
		return nil, fmt.Errorf("%w (leave --since out: a full backup reads the whole snapshot but still sends only the objects not stored yet)", err)
	}
	if d.Full {
		return nil, fmt.Errorf("the daemon does not know what changed (%s): leave --since out", d.Why)
	}
	out := make([]backup.Range, len(d.Extents))
	for i, e := range d.Extents {
		out[i] = backup.Range{Off: e.Off, Len: e.Len}
	}
	return out, nil
}

func (a *app) backupListCmd() *cobra.Command {
	var f s3Flags
	cmd := &cobra.Command{
		Use:   "list s3://BUCKET/PREFIX",
		Short: "List the snapshots backed up at s3://BUCKET/PREFIX, each manifest verified",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			loc, err := backup.ParseURL(args[0])
			if err != nil {
				return usageError{fmt.Errorf("backup list: %w", err)}
			}
			store, err := f.store(loc)
			if err != nil {
				return fmt.Errorf("backup list: %w", err)
			}
			list, err := store.List(cmd.Context())
			if err != nil {
				return fmt.Errorf("backup list: %w", err)
			}
			if f.asJSON {
				type entry struct {
					Name     string           `json:"name"`
					Manifest *backup.Manifest `json:"manifest,omitempty"`
					Error    string           `json:"error,omitempty"`
				}
				out := []entry{}
				for _, e := range list {
					je := entry{Name: e.Name, Manifest: e.Manifest}
					if e.Err != nil {
						je.Error = e.Err.Error()
					}
					out = append(out, je)
				}
				return a.printJSON(out)
			}
			tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SNAPSHOT\tORIGIN\tSIZE\tPARENT\tCHANGED\tCREATED")
			for _, e := range list {
				if e.Err != nil {
					fmt.Fprintf(tw, "%s\t-\t-\t-\t-\tBAD: %v\n", e.Name, oneLine(e.Err.Error()))
					continue
				}
				m := e.Manifest
				parent := m.Parent
				if parent == "" {
					parent = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Origin, formatSize(m.Size), parent, formatSize(m.Changed), m.Created.Format("2006-01-02T15:04:05Z"))
			}
			return tw.Flush()
		},
	}
	f.add(cmd)
	return cmd
}

func (a *app) restoreCmd() *cobra.Command {
	var f s3Flags
	var workers int
	var resume bool
	cmd := &cobra.Command{
		Use:   "restore s3://BUCKET/PREFIX/SNAPSHOT VOLUME",
		Short: "Rebuild a backed-up snapshot onto VOLUME, which must exist and be at least as large",
		Long: "Download the manifest of SNAPSHOT and every object it names, verifying each\n" +
			"SHA-256, before writing anything: a corrupt, truncated or missing object leaves\n" +
			"VOLUME as it was. Then download them again, verify again, and write VOLUME over\n" +
			"NBD. VOLUME is any volume of any daemon (create it first; it is not created for\n" +
			"you); a larger one keeps its bytes past the snapshot's size. After an\n" +
			"interrupted restore, run it again with --resume: VOLUME is read back first, and\n" +
			"the objects it already holds (checked by SHA-256) are not downloaded again.",
		Args: args(2, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			vol := args[1]
			op := "restore " + args[0] + " " + vol
			loc, name, err := backup.SplitSnapshotURL(args[0])
			if err != nil {
				return usageError{fmt.Errorf("%s: %w", op, err)}
			}
			store, err := f.store(loc)
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			res, err := a.overNBD(&f, op, vol, "write", func(nbd *nbdclient.Client, progress func(backup.Progress)) (*backup.Result, error) {
				return store.Restore(cmd.Context(), backup.RestoreRequest{Name: name, Target: nbd, Workers: workers, Progress: progress, Resume: resume})
			})
			if err != nil || f.asJSON {
				return a.printResult(loc, res, err)
			}
			fmt.Fprintf(a.out, "restored %s onto %s: %s written, %d objects verified", name, vol, formatSize(res.Read), res.Uploaded)
			if resume {
				fmt.Fprintf(a.out, ", %d already there", res.Present)
			}
			fmt.Fprintln(a.out)
			return nil
		},
	}
	cmd.Flags().IntVar(&workers, "jobs", 4, "downloads at once")
	cmd.Flags().BoolVar(&resume, "resume", false, "finish an interrupted restore: skip the objects VOLUME already holds")
	f.add(cmd)
	return cmd
}
