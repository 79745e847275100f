package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// bodyRoutes are the routes that decode a JSON body.
var bodyRoutes = []string{
	"/v1/pmem", "/v1/devices", "/v1/devices/a/load", "/v1/devices/a/suspend",
	"/v1/devices/a/resume", "/v1/devices/a/rename", "/v1/devices/a/message",
}

// FuzzDecodeRequest throws arbitrary bodies at every JSON route: the
// server never panics, and whatever it refuses is a 400 with a message.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"name":"a","table":"0 8 zero"}`, `{"name":"r","size":4096}`, `{"table":"x"}`,
		`{"sector":1,"args":["a"]}`, `{"new_name":"b"}`, `{}`, ``, `{`, `[]`, `null`,
		`{"name":1}`, `{"size":-1}`, `{"a":1} {}`, "\x00\xff", `{"args":[1,2]}`,
	} {
		for i := range bodyRoutes {
			f.Add(uint8(i), []byte(seed))
		}
	}
	s := NewServer(stubService{}, Options{})
	ctx := context.WithValue(context.Background(), peerKey{}, Peer{UID: 0})
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		path := bodyRoutes[int(route)%len(bodyRoutes)]
		req := httptest.NewRequestWithContext(ctx, http.MethodPost, path, bytes.NewReader(body))
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		switch {
		case rec.Code < 300:
		case rec.Code == http.StatusBadRequest:
			var eb wire.ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Code != wire.CodeInvalidArgument || eb.Error == "" {
				t.Fatalf("%s %q: 400 with body %q", path, body, rec.Body)
			}
		default:
			t.Fatalf("%s %q: status %d %q", path, body, rec.Code, rec.Body)
		}
	})
}
