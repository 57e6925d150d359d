package irq

import (
	"errors"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// eventfdSource is a real interrupt source: an eventfd the test writes to.
type eventfdSource struct {
	fd      int
	tids    chan int // thread id seen by each Wait and Handle
	handled int
	stopAt  int
}

func (s *eventfdSource) Wait() error {
	s.tids <- unix.Gettid()
	var buf [8]byte
	for {
		_, err := unix.Read(s.fd, buf[:])
		if err == unix.EINTR {
			continue
		}
		return err
	}
}

func (s *eventfdSource) Handle() (int, bool) {
	s.tids <- unix.Gettid()
	s.handled++
	return 1, s.handled >= s.stopAt
}

func TestLineRunsSourceOnOneThreadAndStops(t *testing.T) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	src := &eventfdSource{fd: fd, tids: make(chan int, 100), stopAt: 5}
	l := Start("eventfd", src)
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	for i := 0; i < 5; i++ {
		if _, err := unix.Write(fd, one); err != nil {
			t.Fatal(err)
		}
		// Each event is handled before the next is raised.
		for len(src.tids) < 2*(i+1) {
			runtime.Gosched()
			time.Sleep(time.Millisecond)
		}
	}
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("line did not stop after its source asked to")
	}
	if l.Err() != nil {
		t.Fatalf("Err = %v, want nil after a requested stop", l.Err())
	}
	close(src.tids)
	first := -1
	for tid := range src.tids {
		if first == -1 {
			first = tid
		} else if tid != first {
			t.Fatalf("source ran on threads %d and %d; want one locked thread", first, tid)
		}
	}
	if st := l.Stats(); st.Wakeups != 5 || st.Events != 5 {
		t.Fatalf("stats = %+v, want 5 wakeups and 5 events", st)
	}
}

type failingSource struct{ err error }

func (s failingSource) Wait() error         { return s.err }
func (s failingSource) Handle() (int, bool) { panic("Handle after a failed Wait") }

func TestLineStopsWithWaitError(t *testing.T) {
	want := errors.New("ring gone")
	l := Start("failing", failingSource{want})
	if err := l.Err(); err != want {
		t.Fatalf("Err = %v, want %v", err, want)
	}
	if l.Name() != "failing" {
		t.Fatalf("Name = %q", l.Name())
	}
}

// A polled line (a socket source) handles events and stops like a locked
// one.
func TestPolledLineHandlesAndStops(t *testing.T) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	src := &eventfdSource{fd: fd, tids: make(chan int, 100), stopAt: 3}
	l := StartPolled("polled", src)
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	for i := 0; i < 3; i++ {
		if _, err := unix.Write(fd, one); err != nil {
			t.Fatal(err)
		}
		for len(src.tids) < 2*(i+1) {
			time.Sleep(time.Millisecond)
		}
	}
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("polled line did not stop")
	}
	if st := l.Stats(); l.Err() != nil || st.Events != 3 {
		t.Fatalf("err %v, stats %+v", l.Err(), st)
	}
	gone := errors.New("gone")
	if err := StartPolled("failing", failingSource{gone}).Err(); err != gone {
		t.Fatalf("Err = %v, want %v", err, gone)
	}
}
