package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// maxBody bounds a JSON request (tables are text; 4 MiB is thousands of lines).
const maxBody = 4 << 20

// decode reads exactly one JSON object into v, refusing unknown fields,
// trailing data and oversized bodies. An empty body is the zero value
// unless required. Every failure wraps dm.ErrInvalidArgument.
func decode(w http.ResponseWriter, r *http.Request, v any, required bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return fmt.Errorf("%w: read request body of %s %s: %v (at most %d bytes)", dm.ErrInvalidArgument, r.Method, r.URL.Path, err, maxBody)
	}
	return decodeBody(body, v, required, r.Method+" "+r.URL.Path)
}

// decodeBody is decode's pure part (fuzzed).
func decodeBody(body []byte, v any, required bool, what string) error {
	if len(bytes.TrimSpace(body)) == 0 {
		if required {
			return fmt.Errorf("%w: %s: request body is empty: send a JSON object (see package wire for its fields)", dm.ErrInvalidArgument, what)
		}
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s: request body is not the expected JSON object: %v", dm.ErrInvalidArgument, what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: %s: request body has data after the JSON object: send exactly one object", dm.ErrInvalidArgument, what)
	}
	return nil
}

// boolParam reads a boolean query parameter: absent is false, present
// without a value ("?force") is true.
func boolParam(r *http.Request, name string) (bool, error) {
	q := r.URL.Query()
	if !q.Has(name) {
		return false, nil
	}
	v := q.Get(name)
	if v == "" {
		return true, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%w: query parameter %s=%q: want true or false", dm.ErrInvalidArgument, name, v)
	}
	return b, nil
}

// int64Param reads a non-negative integer query parameter.
func int64Param(r *http.Request, name string, def int64) (int64, error) {
	q := r.URL.Query()
	if !q.Has(name) {
		return def, nil
	}
	v, err := strconv.ParseInt(q.Get(name), 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%w: query parameter %s=%q: want a byte count ≥ 0", dm.ErrInvalidArgument, name, q.Get(name))
	}
	return v, nil
}

func reply(w http.ResponseWriter, status int, v any, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, status, v)
}

func replyEmpty(w http.ResponseWriter, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func writeError(w http.ResponseWriter, err error) {
	code, status := classify(err)
	writeJSON(w, status, wire.ErrorBody{Error: err.Error(), Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(wire.ErrorBody{Code: wire.CodeInternal, Error: "encode reply: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
