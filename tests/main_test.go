package tests

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tfsmountBin is the absolute path of the binary under test: TFSMOUNT_BIN if
// set (what `make e2e` passes), otherwise one TestMain builds from this repo.
var tfsmountBin string

// repoRoot is the directory holding go.mod.
var repoRoot string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	root, err := findRepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tests:", err)
		return 1
	}
	repoRoot = root
	tfsmountBin = os.Getenv("TFSMOUNT_BIN")
	if tfsmountBin == "" {
		dir, err := os.MkdirTemp("", "tfsmount-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "tests: temp dir for the binary:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		tfsmountBin = filepath.Join(dir, "tfsmount")
		build := exec.Command("go", "build", "-o", tfsmountBin, "./cmd/tfsmount")
		build.Dir = repoRoot
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "tests: go build ./cmd/tfsmount: %v\n%s", err, out)
			return 1
		}
	}
	if abs, err := filepath.Abs(tfsmountBin); err == nil {
		tfsmountBin = abs
	}
	if _, err := os.Stat(tfsmountBin); err != nil {
		fmt.Fprintf(os.Stderr, "tests: binary under test: %v\n", err)
		return 1
	}
	return m.Run()
}

func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// requireFUSE fails the test (never skips) when the machine lacks what a real
// mount needs.
func requireFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("FUSE is required: %v", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Fatalf("fusermount3 is required: %v", err)
	}
}

// cmdResult is what one run of the binary produced.
type cmdResult struct {
	Stdout, Stderr []byte
	Err            error
}

func (r cmdResult) String() string {
	return fmt.Sprintf("err=%v\nstdout:\n%s\nstderr:\n%s", r.Err, clip(r.Stdout), clip(r.Stderr))
}

func clip(b []byte) string {
	const max = 4000
	if len(b) > max {
		return string(b[:max]) + fmt.Sprintf("\n... (%d more bytes)", len(b)-max)
	}
	return string(b)
}

// runTool runs tfsmount with args and a time limit, returning its output.
func runTool(t *testing.T, timeout time.Duration, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tfsmountBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("tfsmount %s: timed out after %v", strings.Join(args, " "), timeout)
	}
	return cmdResult{out.Bytes(), errb.Bytes(), err}
}

// mustRun runs tfsmount and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) cmdResult {
	t.Helper()
	r := runTool(t, 2*time.Minute, args...)
	if r.Err != nil {
		t.Fatalf("tfsmount %s failed: %s", strings.Join(args, " "), r)
	}
	return r
}

// newImage makes an empty TFS image of the given size ("64M", "1G") in a
// per-test temp dir and returns its path.
func newImage(t *testing.T, size string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "tfs.img")
	mustRun(t, "mkfs", "--size", size, img)
	return img
}

// requireFsckClean runs `tfsmount fsck` on an unmounted image and fails the
// test with its report unless the image is clean. Every test that writes
// calls it (through (*mount).finish) once the image is unmounted.
func requireFsckClean(t *testing.T, img string, args ...string) {
	t.Helper()
	full := append([]string{"fsck"}, args...)
	full = append(full, img)
	r := runTool(t, 5*time.Minute, full...)
	if r.Err != nil {
		t.Fatalf("fsck %s is not clean: %s", img, r)
	}
}

// fixtureDir is where the Nanos-made fixture images live.
func fixtureDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TFS_FIXTURES")
	if dir == "" {
		dir = filepath.Join(repoRoot, "..", "shared", "fixtures", "nanos-mkfs")
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Fatalf("fixture directory %s is missing (set TFS_FIXTURES): %v", dir, err)
	}
	return dir
}

// gunzipFixture decompresses NAME.img.gz into a fresh temp file and returns
// its path; the image is writable so read-write mounts can use it.
func gunzipFixture(t *testing.T, name string) string {
	t.Helper()
	src := filepath.Join(fixtureDir(t), name+".img.gz")
	f, err := os.Open(src)
	if err != nil {
		t.Fatalf("open fixture: %v", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("gunzip %s: %v", src, err)
	}
	dst := filepath.Join(t.TempDir(), name+".img")
	out, err := os.Create(dst)
	if err != nil {
		t.Fatalf("create %s: %v", dst, err)
	}
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatalf("gunzip %s: %v", src, err)
	}
	if err := out.Close(); err != nil {
		t.Fatalf("close %s: %v", dst, err)
	}
	return dst
}

// exitCode is the exit status of a run (0 when it succeeded, -1 when it
// did not exit normally).
func exitCode(r cmdResult) int {
	if r.Err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(r.Err, &ee) {
		return ee.ExitCode()
	}
	return -1
}
