package uffd

// DevCreate exposes the /dev/userfaultfd path of New, which New takes only
// when userfaultfd(2) is refused, so that the tests can check it as root.
var DevCreate = devCreate

const CreateFlags = createFlags
