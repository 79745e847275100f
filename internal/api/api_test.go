package api

import (
	"errors"
	"net/http"
	"testing"

	"github.com/daxsnap/daxsnap/internal/errcode"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that every error class has an HTTP status, and that a wrapped
// error of the class is answered with its code and that status.
func TestClassify_table(t *testing.T) {
	for _, code := range errcode.Codes() {
		status, ok := statuses[code]
		if !ok || status < 400 {
			t.Errorf("code %s: status %d (known %v), want an error status", code, status, ok)
		}
		class := errcode.Class(code)
		if got, gotStatus := classify(errors.Join(errors.New("ctx"), class)); got != code || gotStatus != status {
			t.Errorf("wrapped %v: %s %d, want %s %d", class, got, gotStatus, code, status)
		}
	}
	if len(statuses) != len(errcode.Codes()) {
		t.Errorf("%d statuses for %d codes: a status without a class is never used", len(statuses), len(errcode.Codes()))
	}
	if code, _ := classify(errors.New("x")); code != wire.CodeInternal {
		t.Errorf("unknown error: %s", code)
	}
}

// Ensure that reads need no credentials and changes need root or the owner.
func TestServer_authorize(t *testing.T) {
	s := NewServer(stubService{}, Options{OwnerUID: ptr(1000)})
	for _, tc := range []struct {
		method string
		peer   Peer
		known  bool
		ok     bool
	}{
		{http.MethodGet, Peer{}, false, true},
		{http.MethodHead, Peer{UID: 5}, true, true},
		{http.MethodPost, Peer{UID: 0}, true, true},
		{http.MethodPost, Peer{UID: 1000}, true, true},
		{http.MethodDelete, Peer{UID: 1001, PID: 42}, true, false},
		{http.MethodPut, Peer{}, false, false},
	} {
		err := s.authorize(tc.method, tc.peer, tc.known)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrPermission)) {
			t.Errorf("%s by %+v (known %v): %v", tc.method, tc.peer, tc.known, err)
		}
	}
}

func ptr[T any](v T) *T { return &v }
