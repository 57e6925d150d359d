package tfs

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tfsmount/tfsmount/blockdev"
	"github.com/tfsmount/tfsmount/tfs/format"
)

// Benchmarks: log replay speed and mount time of a generated image with
// 100,000 files (100 directories of 1000 files, each with one small
// extent), written through the FS API so the log holds one record per
// operation, as a Nanos guest would leave it.
//
//	go test ./tfs -run '^$' -bench . -benchtime 5x

var (
	bigImageOnce sync.Once
	bigImage     []byte
	bigImageErr  error
)

func image100k(b *testing.B) []byte {
	bigImageOnce.Do(func() {
		q := testQueue(b)
		dev := blockdev.NewMemory(q, 512<<20)
		if bigImageErr = format.Mkfs(dev, format.MkfsOptions{Label: "bench"}); bigImageErr != nil {
			return
		}
		// A cache large enough for every file page: generation measures the
		// writer, not eviction.
		fs, err := Mount(dev, Options{Queue: q, WritebackDelay: time.Hour, CacheSize: 1 << 30})
		if err != nil {
			bigImageErr = err
			return
		}
		data := []byte("0123456789")
		for d := 0; d < 100; d++ {
			dir, err := fs.Mkdir(fs.Root(), fmt.Sprintf("dir%03d", d))
			if err != nil {
				bigImageErr = err
				return
			}
			for i := 0; i < 1000; i++ {
				f, err := fs.Create(dir, fmt.Sprintf("file%04d", i), true)
				if err == nil {
					_, err = fs.Write(f, data, 0)
				}
				if err != nil {
					bigImageErr = err
					return
				}
			}
		}
		if bigImageErr = fs.Close(); bigImageErr == nil {
			bigImage = append([]byte(nil), dev.Bytes()...)
		}
	})
	if bigImageErr != nil {
		b.Fatal(bigImageErr)
	}
	return bigImage
}

func BenchmarkLogReplay(b *testing.B) {
	img := image100k(b)
	q := testQueue(b)
	dev := blockdev.NewMemoryFrom(q, img, true)
	blocks := uint64(len(img) / format.BlockSize)
	b.ResetTimer()
	var records uint64
	for i := 0; i < b.N; i++ {
		l, _, err := format.ReadLog(dev, blocks, false)
		if err != nil {
			b.Fatal(err)
		}
		records += l.Records
	}
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(records)/float64(b.N), "records/op")
}

func BenchmarkMount100k(b *testing.B) {
	img := image100k(b)
	q := testQueue(b)
	dev := blockdev.NewMemoryFrom(q, img, true)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fs, err := Mount(dev, Options{Queue: q, ReadOnly: true})
		if err != nil {
			b.Fatal(err)
		}
		if len(fs.byIno) != 100000+100+1 {
			b.Fatalf("%d nodes", len(fs.byIno))
		}
		fs.Close()
	}
}
