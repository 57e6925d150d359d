package uring

import (
	"testing"
	"unsafe"
)

func TestABISizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"io_uring_params", unsafe.Sizeof(Params{}), 120},
		{"io_sqring_offsets", unsafe.Sizeof(SQRingOffsets{}), 40},
		{"io_cqring_offsets", unsafe.Sizeof(CQRingOffsets{}), 40},
		{"io_uring_sqe", unsafe.Sizeof(SQE{}), 64},
		{"io_uring_cqe", unsafe.Sizeof(CQE{}), 16},
		{"io_uring_rsrc_register", unsafe.Sizeof(RsrcRegister{}), 32},
		{"io_uring_rsrc_update2", unsafe.Sizeof(RsrcUpdate2{}), 32},
		{"sqe.user_data offset", unsafe.Offsetof(SQE{}.UserData), 32},
		{"sqe.buf_index offset", unsafe.Offsetof(SQE{}.BufIndex), 40},
		{"sqe.cmd offset", unsafe.Offsetof(SQE{}.Addr3), 48},
		{"params.sq_off offset", unsafe.Offsetof(Params{}.SQOff), 40},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d bytes, want %d", c.name, c.got, c.want)
		}
	}
}

// A NOP goes through a ring of each entry size and comes back with its
// user data; the command area of a 128-byte SQE is 80 bytes and is cleared
// on reuse.
func TestNopRoundTrip(t *testing.T) {
	for _, a := range []Attempt{{0, "plain"}, {SetupSQE128, "SQE128"}} {
		r, err := Setup(4, 8, a)
		if err != nil {
			t.Fatalf("%s: %v", a.Name, err)
		}
		for i := range 6 { // wraps the 4-entry SQ
			e, tail := r.NextSQE()
			if e.Opcode != 0 || e.UserData != 0 {
				t.Fatalf("%s: SQE not cleared: %+v", a.Name, *e)
			}
			if a.Flags&SetupSQE128 != 0 {
				cmd := r.Cmd(e)
				if len(cmd) != 80 {
					t.Fatalf("command area %d bytes, want 80", len(cmd))
				}
				for _, b := range cmd {
					if b != 0 {
						t.Fatalf("command area not cleared")
					}
				}
				cmd[79] = 0xff
			}
			e.Opcode, e.UserData = OpNop, uint64(100+i)
			e.Addr3 = 7
			r.Publish(tail)
			if _, err := r.Enter(1, 1, EnterGetEvents); err != nil {
				t.Fatalf("%s: enter: %v", a.Name, err)
			}
			if !r.CQReady() {
				t.Fatalf("%s: no CQE after a NOP", a.Name)
			}
			head := *r.CQHead
			c := r.CQEs[head&r.CQMask]
			if c.UserData != uint64(100+i) || c.Res != 0 {
				t.Fatalf("%s: CQE %+v, want user data %d, res 0", a.Name, c, 100+i)
			}
			*r.CQHead = head + 1
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
