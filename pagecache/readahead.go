package pagecache

// raStreams is how many sequential readers of one file are told apart.
// Several readers streaming through different parts of a file (fio's
// numjobs, a parallel copy) each keep their own read-ahead window instead
// of resetting one shared window on every interleaved read.
const raStreams = 4

// raStream is the read-ahead state of one sequential reader of a node.
// Guarded by the node lock.
type raStream struct {
	nextRead int64  // page index just after this reader's last read
	raPages  int    // current read-ahead window in pages
	raEnd    int64  // page index read-ahead has been issued up to
	used     uint64 // n.raClock at the last read, for replacement
}

// streamFor returns the stream a read starting at page first continues
// (sequential: it starts where that stream's last read ended, or one page
// before, as a reader of unaligned chunks does), or else the least
// recently used stream, which the caller restarts. Caller holds the node
// lock.
func (n *Node) streamFor(first int64) (*raStream, bool) {
	n.raClock++
	var lru *raStream
	for i := range n.streams {
		s := &n.streams[i]
		if first == s.nextRead || first+1 == s.nextRead {
			s.used = n.raClock
			return s, true
		}
		if lru == nil || s.used < lru.used {
			lru = s
		}
	}
	lru.used = n.raClock
	return lru, false
}
