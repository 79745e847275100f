package testutil

import (
	"encoding/json"
	"strings"
	"testing"
)

// FIOJob is what a test checks of one fio job's JSON result
// (--output-format=json): its error and the bytes it wrote and read
// (with --verify, read is what it verified).
type FIOJob struct {
	Error int `json:"error"`
	Write struct {
		Bytes int64 `json:"io_bytes"`
	} `json:"write"`
	Read struct {
		Bytes int64 `json:"io_bytes"`
	} `json:"read"`
}

// FIOResult parses the output of a one-job fio run with
// --output-format=json (anything fio prints before the JSON is skipped)
// and returns the job, failing t if there is not exactly one.
func FIOResult(t testing.TB, out string) FIOJob {
	t.Helper()
	var res struct {
		Jobs []FIOJob `json:"jobs"`
	}
	js := out
	if i := strings.Index(js, "{"); i >= 0 {
		js = js[i:]
	}
	if err := json.Unmarshal([]byte(js), &res); err != nil || len(res.Jobs) != 1 {
		t.Fatalf("fio output (want one job's JSON): %v\n%s", err, out)
	}
	return res.Jobs[0]
}
