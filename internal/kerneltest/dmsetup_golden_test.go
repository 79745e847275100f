package kerneltest

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// updateGolden makes TestKernelDmsetupGolden rewrite the golden files
// (testdata/dmsetup) from what the kernel's dmsetup printed:
//
//	go test ./internal/kerneltest -run TestKernelDmsetupGolden -update-dmsetup
var updateGolden = flag.Bool("update-dmsetup", false, "rewrite testdata/dmsetup from the kernel's dmsetup output")

// goldenDir holds one file per dmsetup step (GoldenStep), which
// cmd/daxsnap's TestGolden_dmsetup replays against daxsnap.
const goldenDir = "testdata/dmsetup"

// dmsetupSteps is the scenario: dmsetup commands run in this order in the
// guest, each recorded with its exit status, stdout and stderr. Steps
// named "setup-..." are run but not recorded in full (they change state
// by other means than dmsetup: dd); their file holds the command only.
//
// The guest has /dev/vda and /dev/vdb (8 MiB each), /dev/vdc (4 MiB, a
// COW) and /dev/vdd (64 KiB, a COW that overflows). @DMMAJ@ stands for the
// device mapper's major number.
var dmsetupSteps = []struct{ name, cmd string }{
	{"create-lin", "dmsetup create lin --table '0 8192 linear /dev/vda 0'"},
	{"info-lin", "dmsetup info lin"},
	{"ls", "dmsetup ls"},
	{"info-c-lin", "dmsetup info -c lin"},
	{"info-c-fields", "dmsetup info -c -o name,major,minor,attr,open,segments,events,uuid --noheadings --separator : lin"},
	{"load-lin", "dmsetup load lin --table '0 8192 linear /dev/vda 0'"},
	{"info-lin-loaded", "dmsetup info lin"},
	{"resume-lin", "dmsetup resume lin"},
	{"info-lin-resumed", "dmsetup info lin"},
	{"rename-lin", "dmsetup rename lin lin2"},
	{"info-lin2", "dmsetup info lin2"},
	{"rename-back", "dmsetup rename lin2 lin"},
	{"create-str", "dmsetup create str --table '0 16384 striped 2 128 /dev/vda 0 /dev/vdb 0'"},
	{"info-str", "dmsetup info str"},
	{"create-ro", "dmsetup create ro --readonly --table '0 8 linear /dev/vda 0'"},
	{"info-ro", "dmsetup info ro"},
	{"create-empty", "dmsetup create empty --notable -u empty-uuid"},
	{"info-empty", "dmsetup info empty"},
	{"rename-empty", "dmsetup rename empty empty2"},
	{"info-empty2", "dmsetup info empty2"},
	{"rename-empty-back", "dmsetup rename empty2 empty"},
	{"suspend-lin", "dmsetup suspend lin"},
	{"info-lin-suspended", "dmsetup info lin"},
	{"resume-lin-suspended", "dmsetup resume lin"},
	{"create-base-real", "dmsetup create base-real --table '0 8192 linear /dev/vdb 8192'"},
	{"create-base", "dmsetup create base --table '0 8192 snapshot-origin /dev/mapper/base-real'"},
	{"create-snap", "dmsetup create snap --table '0 8192 snapshot /dev/mapper/base-real /dev/vdc P 8'"},
	{"info-base-real", "dmsetup info base-real"},
	{"info-base", "dmsetup info base"},
	{"info-snap", "dmsetup info snap"},
	{"info-all", "dmsetup info"},
	{"ls-after-snap", "dmsetup ls"},
	{"info-c-all", "dmsetup info -c"},
	{"deps-snap", "dmsetup deps snap"},
	{"deps-devname-snap", "dmsetup deps -o devname snap"},
	{"deps-blkdevname-snap", "dmsetup deps -o blkdevname snap"},
	{"deps-lin", "dmsetup deps lin"},
	{"deps-all", "dmsetup deps"},
	{"ls-tree", "dmsetup ls --tree"},
	{"ls-target-snapshot", "dmsetup ls --target snapshot"},
	{"table-target-linear", "dmsetup table --target linear"},
	{"status-target-snapshot", "dmsetup status --target snapshot"},
	{"table-showkeys-snap", "dmsetup table --showkeys snap"},
	{"info-by-number", "dmsetup info -j @DMMAJ@ -m 4"},
	{"remove-busy", "dmsetup remove base-real"},
	{"info-nosuch", "dmsetup info nosuch"},
	{"remove-nosuch", "dmsetup remove nosuch"},
	{"create-exists", "dmsetup create lin --table '0 8 zero'"},
	{"load-bad-target", "dmsetup load lin --table '0 8 nosuchtarget'"},
	{"resume-empty", "dmsetup resume empty"},
	{"create-snap2", "dmsetup create snap2 --table '0 8192 snapshot /dev/mapper/base-real /dev/vdd P 8'"},
	{"setup-fill-origin", "dd if=/dev/urandom of=/dev/mapper/base bs=4096 count=256 oflag=direct"},
	{"status-snap", "dmsetup status snap"},
	{"status-snap2", "dmsetup status snap2"},
	{"info-snap2", "dmsetup info snap2"},
	{"remove-snap2", "dmsetup remove snap2"},
	{"suspend-snap", "dmsetup suspend snap"},
	{"suspend-base", "dmsetup suspend base"},
	{"load-merge", "dmsetup load base --table '0 8192 snapshot-merge /dev/mapper/base-real /dev/vdc P 8'"},
	{"resume-merge", "dmsetup resume base"},
	{"status-snap-merging", "dmsetup status snap"},
	{"table-snap-merging", "dmsetup table snap"},
	{"info-snap-merging", "dmsetup info snap"},
	{"remove-snap", "dmsetup remove snap"},
	{"splitname", "dmsetup splitname vg-lv"},
	{"splitname-layer", "dmsetup splitname vg--x-l--v-real"},
	{"mknodes", "dmsetup mknodes"},
	{"version", "dmsetup version"},
	{"remove-all", "dmsetup remove_all"},
	{"ls-empty", "dmsetup ls"},
	{"info-empty-all", "dmsetup info"},
}

// GoldenStep is one recorded step, as a file of testdata/dmsetup holds it
// (JSON, so that stdout and stderr are kept byte for byte).
type GoldenStep struct {
	Cmd    string `json:"cmd"` // the shell command line, @DMMAJ@ unexpanded
	Rc     int    `json:"rc"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
}

// TestKernelDmsetupGolden runs dmsetupSteps under the kernel's device
// mapper and compares what dmsetup printed with testdata/dmsetup (or, with
// -update-dmsetup, writes it there). Machine-specific values are
// normalised, each for a reason:
//
//   - the device mapper's major: dynamic, 253 or 254 depending on which
//     drivers asked for a major before dm_mod (in the guest virtio_blk does,
//     and dm gets 253; on most hosts dm is first and gets 254). It becomes
//     254, the major daxsnap reports.
//   - the virtio disks' major:minor (a block device daxsnap has no
//     counterpart of; daxsnap's tables name files): "(254, 16)" for vdb
//     becomes "(/dev/vdb)", what daxsnap prints for a dependency that is not
//     a block device, and `deps -o devname`'s "(vdb)" likewise.
//   - dmsetup's library and driver versions (the host's package) become
//     LIBVERSION and DRIVERVERSION.
func TestKernelDmsetupGolden(t *testing.T) {
	k := Require(t)
	dir := t.TempDir()
	disks := []string{
		writeImage(t, dir, "vda.img", nil, 8<<20),
		writeImage(t, dir, "vdb.img", nil, 8<<20),
		writeImage(t, dir, "vdc.img", nil, 4<<20),
		writeImage(t, dir, "vdd.img", nil, 64<<10),
	}
	var script strings.Builder
	script.WriteString(`DMMAJ=$(sed -n 's/^ *\([0-9]*\) device-mapper$/\1/p' /proc/devices)
VDMAJ=$(sed -n 's/^ *\([0-9]*\) virtblk$/\1/p' /proc/devices)
echo "@@DMMAJ $DMMAJ"
echo "@@VDMAJ $VDMAJ"
`)
	for _, s := range dmsetupSteps {
		cmd := strings.ReplaceAll(s.cmd, "@DMMAJ@", "$DMMAJ")
		fmt.Fprintf(&script, "echo '@@STEP %s'\n%s >/tmp/out 2>/tmp/err; echo \"@@RC $?\"\necho @@STDOUT; cat /tmp/out; echo @@STDERR; cat /tmp/err; echo @@DONE\n", s.name, cmd)
	}
	script.WriteString("echo @@FINISHED\n")
	r := Boot(t, k, Options{Disks: disks, Script: script.String()})
	if !strings.Contains(r.Output, "@@FINISHED\n") {
		t.Fatalf("guest script did not finish (exit %d):\n%s", r.ExitCode, r.Output)
	}
	steps, dmMaj, vdMaj := parseGoldenRun(t, r.Output)
	if *updateGolden {
		os.RemoveAll(goldenDir)
		if err := os.MkdirAll(goldenDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range dmsetupSteps {
		got := steps[s.name]
		if got == nil {
			t.Errorf("step %s: no output recorded", s.name)
			continue
		}
		got.Cmd = s.cmd
		normalizeGolden(got, dmMaj, vdMaj)
		if strings.HasPrefix(s.name, "setup-") {
			*got = GoldenStep{Cmd: s.cmd, Rc: got.Rc}
		}
		b, _ := json.MarshalIndent(got, "", "  ")
		b = append(b, '\n')
		p := filepath.Join(goldenDir, fmt.Sprintf("%02d-%s.json", i, s.name))
		if *updateGolden {
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("%v: run with -update-dmsetup to write it", err)
			continue
		}
		if string(want) != string(b) {
			t.Errorf("%s: the kernel's dmsetup printed\n%s\nthe golden file holds\n%s", p, b, want)
		}
	}
}

// parseGoldenRun splits the guest's output into its steps.
func parseGoldenRun(t *testing.T, out string) (steps map[string]*GoldenStep, dmMaj, vdMaj string) {
	steps = map[string]*GoldenStep{}
	var cur *GoldenStep
	var section *string
	for _, l := range strings.SplitAfter(out, "\n") {
		line := strings.TrimSuffix(l, "\n")
		switch {
		case strings.HasPrefix(line, "@@DMMAJ "):
			dmMaj = strings.TrimPrefix(line, "@@DMMAJ ")
		case strings.HasPrefix(line, "@@VDMAJ "):
			vdMaj = strings.TrimPrefix(line, "@@VDMAJ ")
		case strings.HasPrefix(line, "@@STEP "):
			cur = &GoldenStep{}
			steps[strings.TrimPrefix(line, "@@STEP ")] = cur
			section = nil
		case cur != nil && strings.HasPrefix(line, "@@RC "):
			fmt.Sscan(strings.TrimPrefix(line, "@@RC "), &cur.Rc)
		case cur != nil && line == "@@STDOUT":
			section = &cur.Stdout
		case cur != nil && line == "@@STDERR":
			section = &cur.Stderr
		case line == "@@DONE":
			cur, section = nil, nil
		case section != nil:
			*section += l
		}
	}
	if dmMaj == "" || vdMaj == "" {
		t.Fatalf("the guest did not say the majors (dm %q, virtio %q):\n%s", dmMaj, vdMaj, out)
	}
	return steps, dmMaj, vdMaj
}

// normalizeGolden replaces the machine-specific values (see
// TestKernelDmsetupGolden).
func normalizeGolden(s *GoldenStep, dmMaj, vdMaj string) {
	fix := func(text string) string {
		// Virtio disks first: their major may be the 254 dm becomes.
		text = regexp.MustCompile(`\(`+vdMaj+`, (\d+)\)`).ReplaceAllStringFunc(text, func(m string) string {
			var minor int
			fmt.Sscanf(m, "("+vdMaj+", %d)", &minor)
			return fmt.Sprintf("(/dev/vd%c)", 'a'+minor/16)
		})
		text = regexp.MustCompile(`\((vd[a-z])\)`).ReplaceAllString(text, "(/dev/$1)")
		text = regexp.MustCompile(`\b`+vdMaj+`:(\d+)\b`).ReplaceAllStringFunc(text, func(m string) string {
			var minor int
			fmt.Sscanf(m, vdMaj+":%d", &minor)
			return fmt.Sprintf("/dev/vd%c", 'a'+minor/16)
		})
		text = regexp.MustCompile(`\b`+dmMaj+`\b`).ReplaceAllString(text, "254")
		text = regexp.MustCompile(`(Library version: +).*`).ReplaceAllString(text, "${1}LIBVERSION")
		text = regexp.MustCompile(`(Driver version: +).*`).ReplaceAllString(text, "${1}DRIVERVERSION")
		return text
	}
	s.Stdout, s.Stderr = fix(s.Stdout), fix(s.Stderr)
}
