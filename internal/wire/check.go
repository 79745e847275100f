package wire

// CheckReport is what `daxsnap table check` found: how a table would map
// and what it would offer, built against the real devices.
type CheckReport struct {
	Sectors      uint64      `json:"sectors"`
	Capabilities string      `json:"capabilities"`
	Lines        []CheckLine `json:"lines"`
}

// CheckLine is one table line as built.
type CheckLine struct {
	Line         int           `json:"line"`
	Start        uint64        `json:"start"`
	Length       uint64        `json:"length"`
	Type         string        `json:"type"`
	Args         []string      `json:"args"`
	Capabilities string        `json:"capabilities"`
	Devices      []CheckDevice `json:"devices,omitempty"`
}

// CheckDevice is a backing device a line opened.
type CheckDevice struct {
	Name         string `json:"name"`
	Kind         string `json:"kind"`
	Size         int64  `json:"size"`
	Capabilities string `json:"capabilities"`
}
