package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
)

// osDev is an image.Dev on an open file whose writes can be made to fail.
type osDev struct {
	*os.File
	broken bool
}

func (d *osDev) WriteAt(p []byte, off int64) (int, error) {
	if d.broken {
		return 0, errors.New("injected write failure")
	}
	return d.File.WriteAt(p, off)
}
func (d *osDev) Flush() error { return d.Sync() }
func (d *osDev) Size() int64 {
	st, err := d.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}

// pendingImage makes an image at PATH whose checkpoint 1 is applied and
// whose checkpoint 2 (3 chunks) is committed to the journal JPATH but not
// applied to the image (writing the image failed).
func pendingImage(t *testing.T, path, jpath string) {
	const size, chunk = 256 << 10, 64 << 10
	os.WriteFile(path, make([]byte, size), 0o600)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	jf, err := os.OpenFile(jpath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer jf.Close()
	img := &osDev{File: f}
	im, err := image.CreateOn(img, &osDev{File: jf}, size, chunk, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	for seq, chunks := range [][]int64{nil, {0}, {1, 2, 3}} {
		if seq == 0 {
			continue
		}
		txn, err := im.Begin(uint64(seq))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range chunks {
			if err := txn.Put(c, []byte(strings.Repeat("x", chunk))); err != nil {
				t.Fatal(err)
			}
		}
		img.broken = seq == 2
		if _, err := txn.Commit(time.Date(2026, 12, 3, 12, 0, seq, 0, time.UTC)); err != nil {
			t.Fatalf("commit %d: %v", seq, err)
		}
		if err := im.Apply(); (err != nil) != (seq == 2) || (seq == 2 && !errors.Is(err, image.ErrNotApplied)) {
			t.Fatalf("apply %d: %v", seq, err)
		}
	}
}

// Ensure that checkpoint inspect reads an image and its journal offline,
// as text and JSON, with and without the segment lines, that --journal
// names a journal elsewhere, and that a damaged journal fails with the
// report so far and one line on stderr.
func TestCLI_checkpointInspect(t *testing.T) {
	dir := t.TempDir()
	path, jpath := filepath.Join(dir, "vol.img"), filepath.Join(dir, "elsewhere.journal")
	pendingImage(t, path, jpath)

	code, out, errOut := runIn("", "checkpoint", "inspect", path)
	checkFailure(t, code, errOut, "journal of "+path+" is missing", []string{"checkpoint", "inspect", path})
	if out != "" {
		t.Errorf("checkpoint inspect without its journal printed a report: %q", out)
	}

	out, errOut = runOK(t, "checkpoint", "inspect", path, "--journal", jpath)
	for _, want := range []string{
		"image:      " + path + " (262144 bytes)",
		"journal:    " + jpath,
		"format:     version 1, size 262144 bytes, chunk 65536 bytes",
		"last:       checkpoint 2 at 2026-12-03T12:00:02Z, 196608 bytes in 3 chunks",
		"image file: holds checkpoint 1; checkpoint 2 waits in the journal",
		"segment:    byte 8192, checkpoint 2, 3 chunks, 196608 bytes",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("checkpoint inspect lacks %q:\n%s%s", want, out, errOut)
		}
	}
	summary, _ := runOK(t, "checkpoint", "inspect", "--summary", path, "--journal", jpath)
	if strings.Contains(summary, "segment:") || !strings.Contains(summary, "last:       checkpoint 2") {
		t.Errorf("checkpoint inspect --summary: want the checkpoints without a line per segment:\n%s", summary)
	}
	js, _ := runOK(t, "checkpoint", "inspect", "--json", path, "--journal", jpath)
	var rep image.Report
	if err := json.Unmarshal([]byte(js), &rep); err != nil || rep.Last.Seq != 2 || rep.Applied != 1 ||
		len(rep.Segments) != 1 || len(rep.Segments[0].Chunks) != 3 || rep.Problem != "" {
		t.Fatalf("checkpoint inspect --json: %+v, %v\n%s", rep, err, js)
	}

	// A damaged chunk of the pending checkpoint.
	j, _ := os.ReadFile(jpath)
	j[8192+8192+70000] ^= 0xff
	os.WriteFile(jpath, j, 0o600)
	args := []string{"checkpoint", "inspect", path, "--journal", jpath}
	code, out, errOut = runIn("", args...)
	checkFailure(t, code, errOut, "chunk 2 (entry 1) has checksum", args)
	if !strings.Contains(out, "last:       checkpoint 2") || strings.Contains(out, "problem:") {
		t.Errorf("checkpoint inspect of a damaged journal: want the report without the problem (it goes to stderr):\n%s", out)
	}
	if strings.Count(errOut, "inspect") != 1 {
		t.Errorf("the error names inspect more than once: %q", errOut)
	}
	code, out, _ = runIn("", append(args, "--json")...)
	if code != 1 || json.Unmarshal([]byte(out), &rep) != nil || !strings.Contains(rep.Problem, "damaged") {
		t.Errorf("checkpoint inspect --json of a damaged journal: exit %d, problem %q", code, rep.Problem)
	}
}

func runOK(t *testing.T, args ...string) (string, string) {
	t.Helper()
	code, out, errOut := runIn("", args...)
	if code != 0 {
		t.Fatalf("daxsnap %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out, errOut
}
