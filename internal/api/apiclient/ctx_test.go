package apiclient

import "context"

// bg is the context of the tests' API calls: none of them is about
// cancelling, so they run to their end, as before the calls took one.
var bg = context.Background()
