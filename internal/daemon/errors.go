package daemon

import "fmt"

// classErr is a message the daemon words itself, in one of dm's error
// classes (dm.ErrNotFound...), so that the API maps it to the right code
// while the text says exactly what failed and what to do.
type classErr struct {
	msg   string
	class error
}

func (e *classErr) Error() string { return e.msg }
func (e *classErr) Unwrap() error { return e.class }

// errorf words an error of class.
func errorf(class error, format string, args ...any) error {
	return &classErr{msg: fmt.Sprintf(format, args...), class: class}
}
