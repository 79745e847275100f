package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
	"github.com/spf13/cobra"
)

// dmsetup's verbs that daxsnap had not: deps, remove_all, mknodes,
// splitname; and how a device is named by its numbers (MAJ:MIN, -j -m).

func (a *app) dmsetupCmds() []*cobra.Command {
	return []*cobra.Command{a.depsCmd(), a.removeAllCmd(), a.mknodesCmd(), a.splitnameCmd(), a.setCmd()}
}

// devNameStyle is dmsetup's -o devname, blkdevname or devno (the default)
// for deps, ls and ls --tree.
type devNameStyle int

const (
	styleDevno      devNameStyle = iota // (254, 3): the numbers
	styleDevname                        // (base-real): the mapped device's name
	styleBlkdevname                     // (dm-3): the kernel's block device name
)

func parseDevNameStyle(s string) (devNameStyle, error) {
	switch s {
	case "", "devno":
		return styleDevno, nil
	case "devname":
		return styleDevname, nil
	case "blkdevname":
		return styleBlkdevname, nil
	}
	return 0, usageError{fmt.Errorf("-o %q: give devname, blkdevname or devno", s)}
}

// depName is how deps prints one dependency. A file, which has no device
// numbers, is its path whatever the style (the kernel's tables use block
// devices only).
func depName(d wire.Dep, style devNameStyle) string {
	switch {
	case !d.Block:
		return d.Path
	case style == styleDevname && d.Name != "":
		return d.Name
	case style == styleBlkdevname && d.Name != "":
		return fmt.Sprintf("dm-%d", d.Minor)
	case style != styleDevno:
		return filepath.Base(d.Path)
	}
	return fmt.Sprintf("%d, %d", d.Major, d.Minor)
}

// formatDeps prints `dmsetup deps`: "N dependencies<TAB>: (A) (B)", each
// line prefixed with "name: " when listing every device.
func formatDeps(w io.Writer, devs []wire.Info, style devNameStyle, named bool) {
	for _, in := range devs {
		if named {
			fmt.Fprintf(w, "%s: ", in.Name)
		}
		fmt.Fprintf(w, "%d dependencies\t:", len(in.Deps))
		for _, d := range in.Deps {
			fmt.Fprintf(w, " (%s)", depName(d, style))
		}
		fmt.Fprintln(w)
	}
}

// formatTree prints `dmsetup ls --tree`: each device no other device uses,
// with what it uses below it, recursively.
func formatTree(w io.Writer, devs []wire.Info) {
	if len(devs) == 0 {
		io.WriteString(w, noDevices)
		return
	}
	byName := map[string]wire.Info{}
	used := map[string]bool{}
	for _, in := range devs {
		byName[in.Name] = in
		for _, d := range in.Deps {
			if d.Name != "" {
				used[d.Name] = true
			}
		}
	}
	// A device is printed under each device that uses it, with what it
	// uses below it; seen stops a loop (which loads never allow).
	var node func(dep wire.Dep, prefix string, last bool, seen []string)
	children := func(in wire.Info, prefix string, seen []string) {
		for i, d := range in.Deps {
			node(d, prefix, i == len(in.Deps)-1, seen)
		}
	}
	node = func(dep wire.Dep, prefix string, last bool, seen []string) {
		branch, more := " |-", " |  "
		if last {
			branch, more = " `-", "    "
		}
		if !dep.Block {
			fmt.Fprintf(w, "%s%s (%s)\n", prefix, branch, dep.Path)
			return
		}
		fmt.Fprintf(w, "%s%s%s (%d:%d)\n", prefix, branch, dep.Name, dep.Major, dep.Minor)
		if in, ok := byName[dep.Name]; ok && dep.Name != "" && !slices.Contains(seen, dep.Name) {
			children(in, prefix+more[:len(more)-1], append(seen, dep.Name))
		}
	}
	for _, in := range devs {
		if used[in.Name] {
			continue
		}
		fmt.Fprintf(w, "%s (%d:%d)\n", in.Name, in.Major, in.Minor)
		children(in, "", []string{in.Name})
	}
}

func (a *app) depsCmd() *cobra.Command {
	var style string
	cmd := &cobra.Command{
		Use:   "deps [NAME] [-o devname|blkdevname|devno]",
		Short: "List the devices a device's live table uses, as dmsetup deps does",
		Long: `List the devices a device's live table uses, as dmsetup deps does:
"N dependencies : (254, 3) (/dev/shm/daxsnap/r)", the device opened last
first. A mapped device is (MAJOR, MINOR), or with -o devname its name and
-o blkdevname dm-MINOR; a file, which has no device numbers, is its path.`,
		Args: args(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := parseDevNameStyle(style)
			if err != nil {
				return err
			}
			devs, err := a.devicesFor(cmd.Context(), args)
			if err != nil {
				return err
			}
			if len(devs) == 0 {
				fmt.Fprint(a.out, noDevices)
			}
			formatDeps(a.out, devs, s, len(args) == 0)
			return nil
		},
	}
	cmd.Flags().StringVarP(&style, "options", "o", "", "how to name devices: devname, blkdevname or devno (default)")
	return cmd
}

func (a *app) removeAllCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "remove_all [--force]",
		Short: "Remove every device nothing holds open, the devices over others first",
		Long: `Remove every device nothing holds open, the devices over others first, as
dmsetup remove_all does; open devices stay (a note on stderr names them).
With --force, the tables of the devices still open are first replaced
with the error target (all their I/O fails), as remove --force does.`,
		Args: args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			left, err := a.removeAll(ctx, wire.Remove{})
			if err != nil {
				return err
			}
			if force && len(left) > 0 {
				for _, name := range left {
					a.api().Remove(ctx, name, wire.Remove{Force: true}) // busy: its table is error now
				}
				if left, err = a.removeAll(ctx, wire.Remove{}); err != nil {
					return err
				}
			}
			if len(left) > 0 {
				fmt.Fprintf(a.err, "daxsnap: note: remove_all left %d open device(s): %s\n", len(left), strings.Join(left, ", "))
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "replace the tables of open devices with the error target first")
	return cmd
}

// removeAll removes devices until no more can go, and returns the names
// of those left.
func (a *app) removeAll(ctx context.Context, o wire.Remove) ([]string, error) {
	for {
		devs, err := a.api().Devices(ctx)
		if err != nil {
			return nil, err
		}
		removed := false
		var left []string
		for _, in := range devs {
			if in.OpenCount > 0 {
				left = append(left, in.Name)
				continue
			}
			if err := a.api().Remove(ctx, in.Name, o); err == nil {
				removed = true
			} else {
				left = append(left, in.Name)
			}
		}
		if !removed {
			return left, nil
		}
	}
}

func (a *app) mknodesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "mknodes [NAME]",
		Short: "Accepted for dmsetup compatibility: daxsnap devices have no /dev nodes to fix",
		Long: `Accepted for dmsetup compatibility. dmsetup mknodes makes /dev/mapper
match the kernel's devices; daxsnap's devices are reached through NBD,
FUSE ($DAXSNAP_STATE/fuse/NAME) and the DAX session socket, not /dev
nodes, so there is nothing to fix. With NAME it fails if there is no such
device, as dmsetup does.`,
		Args: args(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				_, err := a.api().Info(cmd.Context(), args[0])
				return err
			}
			return nil
		},
	}
}

// splitFields are dmsetup splitname's columns.
var splitFields = []reportField{
	{name: "vg_name", heading: "VG", width: 4},
	{name: "lv_name", heading: "LV", width: 4},
	{name: "lv_layer", heading: "LVLayer", width: 7},
	{name: "subsystem", heading: "Subsys", width: 6},
}

// splitLVM splits an LVM device name as LVM builds it
// (VG-LV[-LAYER], a hyphen inside a name doubled): "vg--x-l--v-real" is
// vg-x, l-v and real.
func splitLVM(name string) (vg, lv, layer string) {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(name); i++ {
		switch {
		case name[i] == '-' && i+1 < len(name) && name[i+1] == '-' && len(parts) < 2:
			cur.WriteByte('-')
			i++
		case name[i] == '-' && len(parts) < 2:
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(name[i])
		}
	}
	parts = append(parts, cur.String())
	parts = append(parts, "", "")
	return parts[0], parts[1], parts[2]
}

func (a *app) splitnameCmd() *cobra.Command {
	var o reportOptions
	cmd := &cobra.Command{
		Use:   "splitname NAME [LVM] [-o FIELDS] [--noheadings] [--separator SEP]",
		Short: "Split an LVM device name into its volume group, logical volume and layer",
		Args:  args(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 2 && args[1] != "LVM" {
				return usageError{fmt.Errorf("splitname %s: subsystem %q: only LVM names can be split", args[0], args[1])}
			}
			fields, err := parseFields(o.fields, "vg_name,lv_name,lv_layer", splitFields)
			if err != nil {
				return err
			}
			vg, lv, layer := splitLVM(args[0])
			values := map[string]string{"vg_name": vg, "lv_name": lv, "lv_layer": layer, "subsystem": "LVM"}
			var row []string
			for _, f := range fields {
				row = append(row, values[f.name])
			}
			formatReport(a.out, fields, [][]string{row}, o)
			return nil
		},
	}
	reportFlags(cmd, &o)
	return cmd
}

// reportFlags adds dmsetup's report flags to cmd.
func reportFlags(cmd *cobra.Command, o *reportOptions) {
	f := cmd.Flags()
	f.StringVarP(&o.fields, "options", "o", "", "comma-separated `FIELDS` (+FIELDS adds to the defaults)")
	f.BoolVar(&o.noHeadings, "noheadings", false, "no heading line (and, without --separator, fields joined by ':')")
	f.StringVar(&o.separator, "separator", "", "`SEP` between fields (unaligned)")
}

// devNumberRE is a device named by its numbers, as dmsetup's -j -m name it.
var devNumberRE = regexp.MustCompile(`^(\d+):(\d+)$`)

// resolveDevice turns MAJ:MIN into the name of the device with those
// numbers; a device really called so keeps its name.
func (a *app) resolveDevice(ctx context.Context, arg string) (string, error) {
	m := devNumberRE.FindStringSubmatch(arg)
	if m == nil {
		return arg, nil
	}
	devs, err := a.api().Devices(ctx)
	if err != nil {
		return "", err
	}
	for _, in := range devs {
		if in.Name == arg {
			return arg, nil
		}
	}
	major, err := strconv.ParseUint(m[1], 10, 32)
	if err != nil {
		return arg, nil // numbers past any device's: only a name can match
	}
	minor, err := strconv.ParseUint(m[2], 10, 64)
	if err != nil {
		return arg, nil
	}
	for _, in := range devs {
		if uint64(in.Major) == major && in.Minor == minor {
			return in.Name, nil
		}
	}
	return "", fmt.Errorf("%s: %w", arg, errNoDeviceNumber{major: major, minor: minor})
}

// errNoDeviceNumber is MAJ:MIN that no device has.
type errNoDeviceNumber struct{ major, minor uint64 }

func (e errNoDeviceNumber) Error() string {
	return fmt.Sprintf("no device has major %d and minor %d (daxsnap's devices have major %d): `daxsnap ls` lists them with theirs", e.major, e.minor, dm.Major)
}

// resolveDeviceArg is the root's PersistentPreRunE: a verb whose first
// argument is a device (completions says which) may be given it as
// MAJ:MIN (or -j MAJ -m MIN), as dmsetup allows; it gets the name.
func (a *app) resolveDeviceArg(cmd *cobra.Command, args []string) error {
	path := strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
	if kinds := completions[path]; len(kinds) == 0 || kinds[0] != deviceName || len(args) == 0 {
		return nil
	}
	name, err := a.resolveDevice(cmd.Context(), args[0])
	if err != nil {
		return fmt.Errorf("%s: %w", cmd.Name(), err)
	}
	args[0] = name // cobra passes RunE this same slice
	return nil
}

// majorMinorArgs rewrites dmsetup's -j MAJ -m MIN (--major, --minor) into
// the argument MAJ:MIN where the first of them stood.
func majorMinorArgs(args []string) ([]string, error) {
	var major, minor string
	at := -1
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			out = append(out, args[i:]...)
			break
		}
		var val *string
		var rest string
		switch {
		case arg == "-j" || arg == "--major":
			val = &major
		case arg == "-m" || arg == "--minor":
			val = &minor
		case strings.HasPrefix(arg, "--major="):
			val, rest = &major, strings.TrimPrefix(arg, "--major=")
		case strings.HasPrefix(arg, "--minor="):
			val, rest = &minor, strings.TrimPrefix(arg, "--minor=")
		case strings.HasPrefix(arg, "-j") && len(arg) > 2 && arg[2] >= '0' && arg[2] <= '9':
			val, rest = &major, arg[2:]
		case strings.HasPrefix(arg, "-m") && len(arg) > 2 && arg[2] >= '0' && arg[2] <= '9':
			val, rest = &minor, arg[2:]
		default:
			out = append(out, arg)
			continue
		}
		if rest == "" {
			if i+1 >= len(args) {
				return nil, usageError{fmt.Errorf("%s needs a number", arg)}
			}
			i++
			rest = args[i]
		}
		if _, err := strconv.ParseUint(rest, 10, 32); err != nil {
			return nil, usageError{fmt.Errorf("%s %q: give a number", arg, rest)}
		}
		*val = rest
		if at < 0 {
			at = len(out)
		}
	}
	if at < 0 {
		return args, nil
	}
	if major == "" || minor == "" {
		return nil, usageError{errors.New("-j MAJOR and -m MINOR name a device together: give both")}
	}
	return slices.Insert(out, at, major+":"+minor), nil
}

// kernelErrno is the text of the errno the kernel's ioctl fails with for
// each of daxsnap's error codes, as dmsetup prints it.
var kernelErrno = map[string]string{
	wire.CodeBusy:            "Device or resource busy",
	wire.CodeExists:          "Device or resource busy",
	wire.CodeNotFound:        "No such device or address",
	wire.CodeInvalidTable:    "Invalid argument",
	wire.CodeUnknownTarget:   "Invalid argument",
	wire.CodeInvalidArgument: "Invalid argument",
	wire.CodeDAXChange:       "Invalid argument",
	wire.CodeNoTable:         "Invalid argument",
	wire.CodeSuspended:       "Invalid argument",
	wire.CodeReadOnly:        "Read-only file system",
	wire.CodePermission:      "Permission denied",
	wire.CodeNoSpace:         "No space left on device",
	wire.CodeIO:              "Input/output error",
	wire.CodeRetry:           "Resource temporarily unavailable",
}

// ioctlOf names the dm ioctl a verb's failure is reported for, as
// dmsetup names it ("" for none).
func ioctlOf(verb, code string) string {
	switch verb {
	case "create":
		if code == wire.CodeExists {
			return "create"
		}
		return "reload" // the table is what failed
	case "load", "reload", "wipe_table":
		return "reload"
	case "remove", "suspend", "resume", "rename", "clear":
		return verb
	}
	return ""
}

// kernelPrefix is what dmsetup prints for a failed ioctl, "device-mapper:
// remove ioctl on vol  failed: Device or resource busy", or "Device does
// not exist." for a query of a device that is not there; "" when dmsetup
// prints neither.
func kernelPrefix(cmd *cobra.Command, args []string, err error) string {
	var apiErr *api.Error
	if cmd == nil || cmd.Parent() == nil || cmd.Parent().Parent() != nil || !errors.As(err, &apiErr) {
		return ""
	}
	verb := cmd.Name()
	switch verb {
	case "info", "table", "status", "deps", "mknodes":
		if apiErr.Code == wire.CodeNotFound {
			return "Device does not exist."
		}
		return ""
	}
	ioctl, errno := ioctlOf(verb, apiErr.Code), kernelErrno[apiErr.Code]
	if ioctl == "" || errno == "" || len(args) == 0 {
		return ""
	}
	return fmt.Sprintf("device-mapper: %s ioctl on %s  failed: %s", ioctl, args[0], errno)
}
