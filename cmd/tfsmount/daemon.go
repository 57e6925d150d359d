package main

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"log/syslog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// readyEnv names the environment variable that tells a re-executed daemon
// which file descriptor leads back to the waiting parent.
const readyEnv = "TFSMOUNT_READY_FD"

// readyOK is the line the daemon writes once the mount exists; anything
// else on the pipe is an error message.
const readyOK = "ok"

// daemonize runs this program again in the foreground as a daemon (its own
// session, stdio on /dev/null) and waits until it reports that the mount
// is ready or has failed, so that 'tfsmount IMAGE DIR' and mount(8) return
// only once the mount can be used. The daemon's later messages go to
// syslog.
func daemonize(args []string, helper bool) int {
	self, err := os.Executable()
	if err != nil {
		return fail(exitSystem, "cannot find my own executable: %v", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fail(exitSystem, "pipe: %v", err)
	}
	// The child is always started under the plain command syntax, where
	// -f means foreground; the helper's own flags were dealt with here.
	childArgs := []string{"-f"}
	for _, a := range args {
		switch {
		case a == "-f" && !helper:
		case helper && (a == "-n" || a == "-s" || a == "-v"):
		default:
			childArgs = append(childArgs, a)
		}
	}
	if helper {
		childArgs = stripTypeFlag(childArgs)
	}
	cmd := exec.Command(self, childArgs...)
	cmd.Args[0] = "tfsmount"
	cmd.ExtraFiles = []*os.File{w} // fd 3 in the child
	cmd.Env = append(os.Environ(), readyEnv+"=3")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Stdin, Stdout, Stderr stay nil: /dev/null. A daemon holding the
	// caller's pipes open would hang callers that read them to EOF.
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fail(exitSystem, "start daemon: %v", err)
	}
	w.Close()
	msg, _ := io.ReadAll(io.LimitReader(r, 64<<10))
	r.Close()
	line := strings.TrimSpace(string(msg))
	if line == readyOK {
		// Leave the daemon running; do not wait for it.
		_ = cmd.Process.Release()
		return exitOK
	}
	// The daemon failed (it exits after reporting), or died silently.
	state, _ := cmd.Process.Wait()
	if line == "" {
		line = fmt.Sprintf("the mount daemon exited without a word (%v)", state)
	}
	return fail(exitMountFail, "%s", line)
}

// stripTypeFlag removes "-t TYPE" pairs that mount(8) may pass a helper.
func stripTypeFlag(args []string) []string {
	out := args[:0:0]
	for i := 0; i < len(args); i++ {
		if args[i] == "-t" {
			i++
			continue
		}
		if strings.HasPrefix(args[i], "-t") {
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// readyPipe opens the descriptor named by TFSMOUNT_READY_FD. It returns
// nil if the value is not a usable descriptor (then errors go to stderr).
func readyPipe(v string) *os.File {
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil
	}
	// Do not pass it to anything this process might start.
	syscall.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "ready-pipe")
}

// reportReady tells the waiting parent the outcome: "" means mounted.
func reportReady(ready *os.File, errMsg string) {
	w := bufio.NewWriter(ready)
	if errMsg == "" {
		w.WriteString(readyOK + "\n")
	} else {
		w.WriteString(errMsg + "\n")
	}
	w.Flush()
	ready.Close()
}

// newLogger returns the daemon's logger: the file of -o log= if given,
// else stderr in the foreground, syslog when detached (nowhere if the
// machine has no syslog).
func newLogger(detached bool, logFile string) (*log.Logger, error) {
	if logFile != "" {
		f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("log file: %w", err)
		}
		return log.New(f, "tfsmount: ", log.LstdFlags), nil
	}
	if !detached {
		return log.New(os.Stderr, "tfsmount: ", log.LstdFlags), nil
	}
	if w, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_NOTICE, "tfsmount"); err == nil {
		return log.New(w, "", 0), nil
	}
	return log.New(io.Discard, "", 0), nil
}
