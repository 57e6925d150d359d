package pagecache

import "time"

// dirtyList is the volume's list of nodes with dirty pages, oldest first.
// A node joins at the young end when it becomes dirty and leaves when it
// is clean again, so the list stays ordered by dirtySince (the clock is
// monotonic) and both "the k oldest" and "every node dirty since before t"
// are read off the head without looking at the other dirty nodes: making
// room with tens of thousands of small dirty files stays cheap.
//
// Invariants (checked by checkDirtyList in tests): the links form one ring
// through the sentinel; a node is on the ring iff its onDirty is set;
// dirtySince never decreases from head to tail; n is the ring's length.
// Guarded by the cache's volMu.
type dirtyList struct {
	head Node // sentinel: head.dirtyNext is the oldest
	n    int
}

// dirtyLinks are a node's links in the volume's dirty list.
type dirtyLinks struct {
	dirtyPrev, dirtyNext *Node
	dirtySince           time.Time
	onDirty              bool
}

func (l *dirtyList) init() {
	l.head.dirtyNext = &l.head
	l.head.dirtyPrev = &l.head
}

// pushBack appends n as the youngest dirty node, dirty since now.
func (l *dirtyList) pushBack(n *Node, now time.Time) {
	n.dirtySince = now
	n.dirtyPrev = l.head.dirtyPrev
	n.dirtyNext = &l.head
	l.head.dirtyPrev.dirtyNext = n
	l.head.dirtyPrev = n
	n.onDirty = true
	l.n++
}

// remove takes n off the list if it is on it.
func (l *dirtyList) remove(n *Node) {
	if !n.onDirty {
		return
	}
	n.dirtyPrev.dirtyNext = n.dirtyNext
	n.dirtyNext.dirtyPrev = n.dirtyPrev
	n.dirtyPrev, n.dirtyNext = nil, nil
	n.onDirty = false
	l.n--
}

// oldest returns up to k nodes from the old end, oldest first.
func (l *dirtyList) oldest(k int) []*Node {
	var out []*Node
	for n := l.head.dirtyNext; n != &l.head && len(out) < k; n = n.dirtyNext {
		out = append(out, n)
	}
	return out
}

// dirtySinceBefore returns the nodes dirty since t or earlier, oldest first.
func (l *dirtyList) dirtySinceBefore(t time.Time) []*Node {
	var out []*Node
	for n := l.head.dirtyNext; n != &l.head && !n.dirtySince.After(t); n = n.dirtyNext {
		out = append(out, n)
	}
	return out
}
