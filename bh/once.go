package bh

// Checked wraps a completion so that the tfsdebug build enforces the
// exactly-once rule: a second call panics naming what the completion was
// for and where it was created, and a completion never called is listed by
// Outstanding until it is. In release builds Checked returns d itself and
// costs nothing.
//
// Wrap completions at the point where they are handed to another layer
// (pagecache waiters, merge parts), so a bug shows up where it happens.
func Checked(what string, d Done) Done { return checked(what, d) }

// Outstanding lists the checked completions created and not yet called,
// each with what it was for and its creation site. Tests call it at
// teardown; a non-empty list means a requester would hang. It is always
// empty in release builds.
func Outstanding() []string { return outstanding() }

// CheckEnabled reports whether this is the tfsdebug build, where Checked
// and Outstanding do their work.
const CheckEnabled = checkEnabled
