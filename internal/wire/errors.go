package wire

// ErrorBody is the JSON body of every failed request.
type ErrorBody struct {
	Error string `json:"error"` // what failed, why, and what to do
	Code  string `json:"code"`  // one of the Code constants
}

// Error codes, each with the HTTP status the API answers with.
const (
	CodeBusy            = "busy"               // 409: device open or in use
	CodeRetry           = "retry"              // 503: the device is being changed (mappings recalled): ask again shortly
	CodeDAXChange       = "dax_change"         // 409: load would take dax or sync away
	CodeExists          = "exists"             // 409: name or uuid taken
	CodeNoTable         = "no_table"           // 409: the needed table slot is empty
	CodeSuspended       = "suspended"          // 409: operation needs a running device
	CodeReadOnly        = "read_only"          // 409: write to a read-only device
	CodeInvalidTable    = "invalid_table"      // 400: table text or target arguments wrong
	CodeUnknownTarget   = "unknown_target"     // 400: table names an unregistered target type
	CodeInvalidArgument = "invalid_argument"   // 400: malformed request or argument
	CodeOutOfRange      = "out_of_range"       // 400: I/O beyond the end of the device
	CodeNotSupported    = "not_supported"      // 400: the target cannot do that
	CodeNotFound        = "not_found"          // 404: no such device, region or route
	CodePermission      = "permission_denied"  // 403: caller may not change anything
	CodeMethod          = "method_not_allowed" // 405: wrong HTTP method for the route
	CodeNoSpace         = "no_space"           // 507: no room for a region or a write
	CodeIO              = "io"                 // 500: the I/O failed
	CodeInternal        = "internal"           // 500: a daxsnap bug or an unexpected failure
)
