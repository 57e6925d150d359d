package pagecache

import (
	"testing"
	"time"
)

func TestLogLimiter(t *testing.T) {
	const burst = 20
	l := LogLimiter{Burst: burst}
	t0 := time.Unix(1000, 0)
	for i := 0; i < burst; i++ {
		if ok, _ := l.Allow(t0); !ok {
			t.Fatalf("message %d of the first second held back", i)
		}
	}
	for i := 0; i < 5; i++ {
		if ok, _ := l.Allow(t0.Add(500 * time.Millisecond)); ok {
			t.Fatalf("message %d over the burst let through", burst+i)
		}
	}
	ok, dropped := l.Allow(t0.Add(time.Second))
	if !ok || dropped != 5 {
		t.Errorf("next second: ok %v, dropped %d; want true, 5", ok, dropped)
	}
}
