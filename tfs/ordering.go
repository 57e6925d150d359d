package tfs

// orderRules switches the ordering rules of the package comment (api.go)
// on and off. They are always on; TestOrderingRules turns one off at a
// time to show that the crash simulator catches what it guards against.
var orderRules = struct {
	publishLast     bool // rule 1: every other block of a log write is durable before the block that publishes it
	dataFirst       bool // rule 2: file data is durable before the records that point at it
	freeAfterCommit bool // rule 3: freed blocks are reused only once the freeing record is durable
}{true, true, true}
