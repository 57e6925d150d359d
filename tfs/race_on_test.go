//go:build race

package tfs

import "testing"

// raceBuild: the race detector slows the crash simulator tenfold; under it
// the simulator runs small, since the unit run covers it in full.
const raceBuild = true

// skipUnderRace skips a long single-threaded test in the race run; the
// unit run covers it.
func skipUnderRace(t *testing.T, why string) { t.Skip("under the race detector: " + why) }
