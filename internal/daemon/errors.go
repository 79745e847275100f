package daemon

import "github.com/daxsnap/daxsnap/internal/dm"

// errorf words a message the daemon words itself in one of dm's error
// classes (dm.ErrNotFound...), so that the API maps it to the right code
// while the text says exactly what failed and what to do.
var errorf = dm.Errorf
