//go:build tfsdebug

package pagecache

import (
	"strings"
	"testing"
)

func mustPanic(t *testing.T, what, want string, fn func()) {
	t.Helper()
	defer func() {
		t.Helper()
		v := recover()
		msg, _ := v.(string)
		if v == nil || !strings.Contains(msg, want) {
			t.Fatalf("%s: panic %v, want one mentioning %q", what, v, want)
		}
	}()
	fn()
}

// The debug build catches locks taken out of the documented order, and
// calls out (Backing, waits) with a node or state lock held.
func TestLockOrderCheckedInDebugBuild(t *testing.T) {
	r := newRig(t, rigOpts{})
	n := r.c.NewNode(newFakeBacking(r.sp))

	// In order: fine.
	n.lockWB()
	n.lock()
	st := r.c.lockState()
	st.unlock()
	r.c.lockVolume()
	r.c.unlockVolume()
	n.unlock()
	n.unlockWB()

	mustPanic(t, "node under state", "taking node lock while holding state lock", func() {
		st := r.c.lockState()
		defer st.unlock()
		n.lock()
	})
	mustPanic(t, "write-back under node", "taking node write-back lock while holding node lock", func() {
		n.lock()
		defer n.unlock()
		n.lockWB()
	})
	mustPanic(t, "volume under state", "taking volume lock while holding state lock", func() {
		st := r.c.lockState()
		defer st.unlock()
		r.c.lockVolume()
	})
	mustPanic(t, "waiting under node", "while holding the node lock", func() {
		n.lock()
		defer n.unlock()
		assertNoLocksHeld("waiting for I/O")
	})
	// The write-back lock may be held across waits and Backing calls.
	n.lockWB()
	assertNoLocksHeld("write-back")
	n.unlockWB()
}
