package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// startCPUProfile profiles the daemon from mount to exit when
// TFSMOUNT_CPUPROFILE names a file, for performance work on a real mount
// (go tool pprof bin/tfsmount FILE). The returned stop writes the profile.
func startCPUProfile() (stop func(), err error) {
	path := os.Getenv("TFSMOUNT_CPUPROFILE")
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return func() {}, fmt.Errorf("TFSMOUNT_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return func() {}, fmt.Errorf("TFSMOUNT_CPUPROFILE: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
