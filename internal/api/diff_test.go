package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// diffStub is a service that tracks changed blocks and records what it
// was asked.
type diffStub struct {
	stubService
	asked *[]wire.SnapshotDiffRequest
}

func (s diffStub) SnapshotDiff(_ context.Context, req wire.SnapshotDiffRequest) (wire.SnapshotDiff, error) {
	*s.asked = append(*s.asked, req)
	return wire.SnapshotDiff{From: req.From, To: req.To}, nil
}

// Ensure that GET /v1/snapshots/NAME/diff hands the service its query
// (to, full), refuses a full= that is no boolean before the service sees
// it, and that a service without changed-block tracking answers
// not_supported.
func TestServer_snapshotDiffQuery(t *testing.T) {
	get := func(svc Service, target string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		NewServer(svc, Options{}).ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
		return w
	}
	var asked []wire.SnapshotDiffRequest
	svc := diffStub{asked: &asked}
	if w := get(svc, "/v1/snapshots/s%201/diff?to=s2&full=1"); w.Code != http.StatusOK {
		t.Fatalf("diff: %d %s", w.Code, w.Body)
	}
	if want := (wire.SnapshotDiffRequest{From: "s 1", To: "s2", Full: true}); len(asked) != 1 || asked[0] != want {
		t.Fatalf("the service was asked %+v, want %+v", asked, want)
	}
	if w := get(svc, "/v1/snapshots/s1/diff?full=maybe"); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), wire.CodeInvalidArgument) || len(asked) != 1 {
		t.Fatalf("full=maybe: %d %s (service asked %d times), want 400 invalid_argument unasked", w.Code, w.Body, len(asked))
	}
	if w := get(stubService{}, "/v1/snapshots/s1/diff"); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), wire.CodeNotSupported) {
		t.Fatalf("a service without tracking: %d %s, want 400 not_supported", w.Code, w.Body)
	}
}
