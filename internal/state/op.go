package state

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
)

// Op is the operation in flight on a record: a verb ("create", "load",
// "snapshot-create", ...) and its argument, if it has one (the snapshot
// a snapshot verb works on). The zero Op means none. It is stored as a
// JSON object, so nothing has to parse it back out of text.
type Op struct {
	Verb string `json:"verb"`
	Arg  string `json:"arg,omitempty"`
}

// IsZero reports whether no operation is in flight.
func (o Op) IsZero() bool { return o == Op{} }

// String is the operation for people (logs, notes): the verb, then the
// argument if there is one. Nothing parses it.
func (o Op) String() string {
	if o.Arg == "" {
		return o.Verb
	}
	return o.Verb + " " + o.Arg
}

// LogValue logs the operation as its text, in text and JSON logs alike.
func (o Op) LogValue() slog.Value { return slog.StringValue(o.String()) }

// UnmarshalJSON reads an Op object, or the plain string earlier versions
// recorded ("create", "snapshot-create NAME"), whose first word is the
// verb and the rest its argument.
func (o *Op) UnmarshalJSON(b []byte) error {
	var old string
	if err := json.Unmarshal(b, &old); err == nil {
		verb, arg, _ := strings.Cut(old, " ")
		*o = Op{Verb: verb, Arg: arg}
		return nil
	}
	type plain Op // without this method
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("operation in flight %s: want {\"verb\": ..., \"arg\": ...} or a string: %w", b, err)
	}
	*o = Op(p)
	return nil
}
