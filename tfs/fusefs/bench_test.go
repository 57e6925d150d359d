package fusefs

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkSequential measures 1 MiB writes and reads of a 32 MiB file
// through the in-process mount of a memory device: the FUSE round trips,
// this adapter and tfs, without a disk. Reads drop the kernel page cache
// for the file first (POSIX_FADV_DONTNEED) so that they reach the daemon.
func BenchmarkSequential(b *testing.B) {
	const fileSize, chunk = 32 << 20, 1 << 20
	for _, op := range []string{"write", "read"} {
		b.Run(op, func(b *testing.B) {
			v := newTestVolume(b, Config{})
			p := v.path("f")
			buf := make([]byte, chunk)
			if err := os.WriteFile(p, make([]byte, fileSize), 0o644); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(fileSize)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				flag := os.O_RDONLY
				if op == "write" {
					flag = os.O_WRONLY
				}
				f, err := os.OpenFile(p, flag, 0)
				if err != nil {
					b.Fatal(err)
				}
				if op == "read" {
					dropCache(f)
				}
				for off := int64(0); off < fileSize; off += chunk {
					if op == "write" {
						_, err = f.WriteAt(buf, off)
					} else {
						_, err = f.ReadAt(buf, off)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				f.Close()
			}
		})
	}
}

// dropCache asks the kernel to forget f's cached pages.
func dropCache(f *os.File) {
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
