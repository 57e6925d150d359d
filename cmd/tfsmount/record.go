package main

import (
	"fmt"
	"os"

	"github.com/tfsmount/tfsmount/bh"
	"github.com/tfsmount/tfsmount/blockdev"
)

// recordDevice is for crash tests on a real mount: when
// TFSMOUNT_CRASH_RECORD names a file, the daemon's device records every
// write and flush it is asked for (blockdev.Faulty), and save writes the
// recording there once the volume is closed, so that a test can rebuild
// every image a power cut could have left (tests/crash_test.go). Every
// write's data stays in memory until then: not for production use.
func recordDevice(dev blockdev.Device, q *bh.Queue) (blockdev.Device, func() error, error) {
	path := os.Getenv("TFSMOUNT_CRASH_RECORD")
	if path == "" {
		return dev, func() error { return nil }, nil
	}
	f := blockdev.NewFaulty(dev, q)
	if err := f.Record(); err != nil {
		return dev, nil, fmt.Errorf("TFSMOUNT_CRASH_RECORD: %w", err)
	}
	save := func() error {
		out, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("TFSMOUNT_CRASH_RECORD: %w", err)
		}
		if err := f.Recording().Save(out); err != nil {
			out.Close()
			return fmt.Errorf("TFSMOUNT_CRASH_RECORD: %w", err)
		}
		return out.Close()
	}
	return f, save, nil
}
