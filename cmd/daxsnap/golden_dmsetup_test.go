package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/api/apiclient"
	"golang.org/x/sys/unix"
)

// goldenDmsetupDir is where internal/kerneltest's TestKernelDmsetupGolden
// records what the kernel's dmsetup printed (regenerate it there with
// -update-dmsetup).
const goldenDmsetupDir = "../../internal/kerneltest/testdata/dmsetup"

// goldenStep is one recorded step (kerneltest.GoldenStep).
type goldenStep struct {
	Cmd    string `json:"cmd"`
	Rc     int    `json:"rc"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
}

// goldenDifferences are the steps where daxsnap knowingly differs from
// the kernel, each with the reason (docs/dmsetup.md lists them): the step
// runs, so that the state stays the scenario's, but is not compared.
var goldenDifferences = map[string]string{
	// dmsetup's own version and the kernel driver's, which daxsnap has
	// not: only the labels are compared (see below).
	"version": "versions",
}

// Ensure that daxsnap prints what the kernel's dmsetup printed for the
// same commands (the golden files internal/kerneltest records under
// Linux 6.1): info (lines and order, major:minor, read-ahead, event
// numbers, open counts), ls (plain, --tree, --target), info -c with its
// fields, deps (-o devname, blkdevname), table and status --target,
// splitname, mknodes, remove_all, a snapshot invalidated and one taken
// over by snapshot-merge, and the errors' kernel text.
//
// The kernel's disks /dev/vdX are memory regions here; what daxsnap
// prints for them is turned back into /dev/vdX (the golden files hold the
// kernel's disks by those names, see TestKernelDmsetupGolden). daxsnap's
// tables name a mapped device /dev/mapper/NAME where the kernel's print
// its numbers: table output has those turned into 254:MINOR before the
// comparison (a known difference, docs/dmsetup.md).
func TestGolden_dmsetup(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(goldenDmsetupDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files in %s (%v): run internal/kerneltest's TestKernelDmsetupGolden with -update-dmsetup", goldenDmsetupDir, err)
	}
	sort.Strings(files)
	c := newCLI(t)
	// The kernel's virtio disks are not DAX-capable: nor are these files
	// (a DAX-capable origin could not take the snapshot-merge table the
	// scenario loads, by daxsnap's capability rule).
	dir := diskDir(t)
	disks := map[string]string{}
	for _, d := range []struct {
		name string
		size int64
	}{{"vda", 8 << 20}, {"vdb", 8 << 20}, {"vdc", 4 << 20}, {"vdd", 64 << 10}} {
		p := filepath.Join(dir, d.name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, d.size); err != nil {
			t.Fatal(err)
		}
		disks["/dev/"+d.name] = p
	}
	client := apiclient.New(c.socket)
	t.Cleanup(client.Close)
	minors := map[string]string{} // mapped device name -> its minor, for table output
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var want goldenStep
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		step := strings.TrimSuffix(filepath.Base(f), ".json")
		step = step[strings.Index(step, "-")+1:]
		argv := shellWords(t, want.Cmd)
		if strings.HasPrefix(step, "setup-") {
			goldenSetup(t, client, step)
			continue
		}
		if argv[0] != "dmsetup" {
			t.Fatalf("%s: %q is not a dmsetup command", f, want.Cmd)
		}
		args := []string{"--socket", c.socket}
		for _, a := range argv[1:] {
			a = strings.ReplaceAll(a, "@DMMAJ@", "254")
			for dev, path := range disks {
				a = strings.ReplaceAll(a, dev, path)
			}
			args = append(args, a)
		}
		code, out, errOut := runIn("", args...)
		for dev, path := range disks {
			out = strings.ReplaceAll(out, path, dev)
			errOut = strings.ReplaceAll(errOut, path, dev)
		}
		if code == 0 && strings.HasPrefix(step, "create-") {
			in, err := client.Info(context.Background(), argv[2])
			if err != nil {
				t.Fatalf("%s: %v", step, err)
			}
			minors[in.Name] = fmt.Sprintf("%d:%d", in.Major, in.Minor)
		}
		if argv[1] == "info" {
			out = dropOwnLines(out)
		}
		if argv[1] == "table" {
			out = mapperRE.ReplaceAllStringFunc(out, func(m string) string {
				if n, ok := minors[strings.TrimPrefix(m, "/dev/mapper/")]; ok {
					return n
				}
				return m
			})
		}
		if why, ok := goldenDifferences[step]; ok {
			t.Logf("%s: not compared (%s): kernel rc %d %q, daxsnap rc %d %q", step, why, want.Rc, want.Stdout, code, out+errOut)
			if step == "version" {
				for _, l := range []string{"Library version:   ", "Driver version:    "} {
					if !strings.Contains(out, "\n"+l) && !strings.HasPrefix(out, l) {
						t.Errorf("version: no line starting %q:\n%s", l, out)
					}
				}
			}
			continue
		}
		if code != want.Rc {
			t.Errorf("%s: daxsnap %s: exit %d, the kernel's dmsetup %d (stderr %q)", step, strings.Join(args[2:], " "), code, want.Rc, errOut)
		}
		if out != want.Stdout {
			t.Errorf("%s: daxsnap %s printed\n%q\nthe kernel's dmsetup\n%q", step, strings.Join(args[2:], " "), out, want.Stdout)
		}
		if want.Rc != 0 {
			first, _, _ := strings.Cut(want.Stderr, "\n")
			if !strings.HasPrefix(errOut, "daxsnap: "+first) {
				t.Errorf("%s: stderr %q does not begin with dmsetup's %q", step, errOut, first)
			}
		}
	}
}

// diskDir is a directory on a file system that is not DAX-capable to
// daxsnap (not tmpfs or hugetlbfs): the test's temporary directory, or
// else one in /var/tmp.
func diskDir(t *testing.T) string {
	t.Helper()
	for _, dir := range []string{t.TempDir(), "/var/tmp"} {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil || st.Type == unix.TMPFS_MAGIC || st.Type == unix.HUGETLBFS_MAGIC {
			continue
		}
		if dir == "/var/tmp" {
			d, err := os.MkdirTemp(dir, "daxsnap-golden-")
			if err != nil {
				break
			}
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
		return dir
	}
	t.Fatal("neither the test's temporary directory nor /var/tmp is on a disk file system (both tmpfs?): set TMPDIR to one")
	return ""
}

var mapperRE = regexp.MustCompile(`/dev/mapper/[^ \n]+`)

// dropOwnLines removes daxsnap's own lines from info output, which come
// after the kernel's in each device's block (the issue keeps them there):
// a block's tail of such lines goes; one before a kernel line stays, and
// fails the comparison.
func dropOwnLines(out string) string {
	own := regexp.MustCompile(`^(Capabilities|Owner|Durability|Holder|Note): `)
	var b strings.Builder
	for _, block := range strings.SplitAfter(out, "\n\n") {
		body, ended := strings.CutSuffix(block, "\n\n")
		lines := strings.Split(body, "\n")
		end := len(lines)
		for end > 1 && own.MatchString(lines[end-1]) {
			end--
		}
		b.WriteString(strings.Join(lines[:end], "\n"))
		if ended {
			b.WriteString("\n\n")
		}
	}
	return b.String()
}

// goldenSetup does what a setup step did in the guest.
func goldenSetup(t *testing.T, client *apiclient.Client, step string) {
	t.Helper()
	switch step {
	case "setup-fill-origin": // dd if=/dev/urandom of=/dev/mapper/base bs=4096 count=256
		data := make([]byte, 1<<20)
		r := rand.NewChaCha8([32]byte{1})
		r.Read(data)
		for off := 0; off < len(data); off += 64 << 10 {
			if err := client.WriteData(context.Background(), "base", int64(off), data[off:off+64<<10]); err != nil {
				t.Fatalf("%s: %v", step, err)
			}
		}
	default:
		t.Fatalf("setup step %s: the test does not know how to do it", step)
	}
}

// shellWords splits a command line of words and single-quoted strings.
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	var cur bytes.Buffer
	in, quoted := false, false
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case ch == '\'':
			quoted, in = !quoted, true
		case ch == ' ' && !quoted:
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(ch)
			in = true
		}
	}
	if quoted {
		t.Fatalf("unterminated quote in %q", s)
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}
