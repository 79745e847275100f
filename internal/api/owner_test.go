package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// ownerStub is a service whose device "vol" is owned by uid 1000.
type ownerStub struct {
	stubService
	set *[]wire.SetOwner
}

func (s ownerStub) SetOwner(_ context.Context, name string, req wire.SetOwner) (wire.Info, error) {
	*s.set = append(*s.set, req)
	return wire.Info{Name: name, UID: *req.UID}, nil
}

// Ensure that set (POST /v1/devices/NAME/owner) has create's rule: root
// or the daemon's uid may change a device's owner; uid 65534 may not,
// not even to give another's device to itself, and the service never
// sees its request.
func TestServer_setOwnerAuthorize(t *testing.T) {
	var set []wire.SetOwner
	s := NewServer(ownerStub{set: &set}, Options{OwnerUID: ptr(0)})
	post := func(p Peer) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/v1/devices/vol/owner", strings.NewReader(`{"uid": 65534}`))
		r.Header.Set("Content-Type", "application/json")
		r = r.WithContext(context.WithValue(r.Context(), peerKey{}, p))
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w
	}
	w := post(Peer{UID: 65534, GID: 65534, PID: 7})
	if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), wire.CodePermission) || !strings.Contains(w.Body.String(), "uid 65534") {
		t.Fatalf("uid 65534: %d %s, want 403 permission_denied naming it", w.Code, w.Body)
	}
	if len(set) != 0 {
		t.Fatalf("the service saw uid 65534's request: %+v", set)
	}
	if w := post(Peer{UID: 0, PID: 8}); w.Code != http.StatusOK || len(set) != 1 || *set[0].UID != 65534 {
		t.Fatalf("root: %d %s (service saw %+v)", w.Code, w.Body, set)
	}
}
