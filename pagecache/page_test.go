package pagecache

import (
	"strings"
	"testing"
)

// TestPageTransitionsTable checks every ordered pair of states against the
// documented table: the legal moves are exactly these, and setState
// refuses the rest with a panic naming both states.
func TestPageTransitionsTable(t *testing.T) {
	legal := map[[2]pageState]bool{
		{stateFree, stateAlloc}:    true,
		{stateAlloc, stateReading}: true,
		{stateAlloc, stateDirty}:   true,
		{stateAlloc, stateFree}:    true,
		{stateReading, stateClean}: true,
		{stateReading, stateAlloc}: true,
		{stateClean, stateDirty}:   true,
		{stateClean, stateFree}:    true,
		{stateDirty, stateWriting}: true,
		{stateDirty, stateAlloc}:   true,
		{stateWriting, stateClean}: true,
		{stateWriting, stateDirty}: true,
	}
	for from := pageState(0); from < numStates; from++ {
		for to := pageState(0); to < numStates; to++ {
			t.Run(from.String()+"->"+to.String(), func(t *testing.T) {
				want := legal[[2]pageState{from, to}]
				err := checkTransition(from, to)
				if (err == nil) != want {
					t.Fatalf("checkTransition = %v, want legal=%v", err, want)
				}
				r := newRig(t, rigOpts{})
				n := r.c.NewNode(newFakeBacking(r.sp))
				p := &page{node: n, index: 0, state: from}
				if from != stateFree {
					p.buf = make([]byte, PageSize)
				}
				panicked := func() (msg string) {
					defer func() {
						if v := recover(); v != nil {
							msg, _ = v.(string)
							if msg == "" {
								msg = "panic"
							}
						}
					}()
					st := r.c.lockState()
					defer st.unlock()
					st.setState(p, to)
					return ""
				}()
				if want && panicked != "" {
					t.Fatalf("legal move panicked: %s", panicked)
				}
				if !want {
					if panicked == "" {
						t.Fatalf("illegal move was accepted")
					}
					if !strings.Contains(panicked, from.String()+" -> "+to.String()) {
						t.Fatalf("panic %q does not name the move", panicked)
					}
					return
				}
				if p.state != to {
					t.Fatalf("state is %s after the move", p.state)
				}
				wantLRU := to == stateClean || to == stateAlloc
				if p.onLRU != wantLRU {
					t.Fatalf("on LRU %v in state %s", p.onLRU, to)
				}
				// Undo the bookkeeping so the rig's Close sees a clean cache.
				st := r.c.lockState()
				if p.onLRU {
					r.c.lru.remove(p)
				}
				for s, sign := range map[pageState]int{from: +1, to: -1} {
					switch s {
					case stateDirty:
						r.c.dirtyPages += int64(sign)
					case stateReading, stateWriting:
						n.inflight += sign
					}
				}
				st.unlock()
				if r.c.dirtyPages != 0 || n.inflight != 0 {
					t.Fatalf("counters off after the move: dirty %d inflight %d", r.c.dirtyPages, n.inflight)
				}
			})
		}
	}
}

// TestPageStatesCoverAllValues checks that every state has a name and a
// row in the table, so adding a state forces a decision about its moves.
func TestPageStatesCoverAllValues(t *testing.T) {
	for s := pageState(0); s < numStates; s++ {
		if strings.HasPrefix(s.String(), "state(") {
			t.Errorf("state %d has no name", s)
		}
		any := false
		for to := pageState(0); to < numStates; to++ {
			any = any || legalTransitions[s][to] || legalTransitions[to][s]
		}
		if !any {
			t.Errorf("state %s has no transitions", s)
		}
	}
	if err := checkTransition(numStates, stateFree); err == nil {
		t.Errorf("an out-of-range state was accepted")
	}
}
