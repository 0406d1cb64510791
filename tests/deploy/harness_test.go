package deploy

// The harness these tests share: the repository's files, the release binary
// (`cargo build --release -p modelgate`, which scripts/test runs first),
// tools installed by scripts/install-test-deps, a collector started on
// ephemeral 127.0.0.1 ports and the incident replays. Every wait is bounded;
// every process a test starts is killed when the test ends.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// How long the collector may take to bind its ports.
const startTimeout = 30 * time.Second

// repoRoot is the repository this module sits in (tests/deploy).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// repoFile is a file of the repository; a missing one fails the test.
func repoFile(t testing.TB, rel string) string {
	t.Helper()
	path := filepath.Join(repoRoot(t), rel)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: %v", rel, err)
	}
	return path
}

func targetDir(t testing.TB) string {
	if dir := os.Getenv("CARGO_TARGET_DIR"); dir != "" {
		return dir
	}
	return filepath.Join(repoRoot(t), "target")
}

// modelgateBin is the release binary, or $MODELGATE_BIN.
func modelgateBin(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("MODELGATE_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(targetDir(t), "release", "modelgate")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is missing: build it with `cargo build --release -p modelgate` (scripts/test does), or set MODELGATE_BIN", bin)
	}
	return bin
}

// tool is a program scripts/install-test-deps installs; missing means the
// machine was not prepared.
func tool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: run scripts/install-test-deps", name)
	}
	return path
}

// cleanEnv is this process's environment without MODELGATE_* (the collector
// refuses unknown ones; MODELGATE_BIN is this harness's) plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MODELGATE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// freePort is a port free a moment ago on 127.0.0.1, for servers that cannot
// report the port they bound (Prometheus, Alertmanager, the registry).
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// logBuffer collects a child's output for failure reports.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startProcess starts a server process, kills and reaps it when the test
// ends, and returns its output so far on demand.
func startProcess(t testing.TB, cmd *exec.Cmd) *logBuffer {
	t.Helper()
	out := &logBuffer{}
	if cmd.Stdout == nil {
		cmd.Stdout = out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = out
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return out
}

// waitHTTP waits (bounded) until GET url answers 200.
func waitHTTP(t testing.TB, what, rawURL string, timeout time.Duration, log *logBuffer) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(rawURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready at %s within %v (last error %v):\n%s", what, rawURL, timeout, err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// eventually polls check every 200 ms until it returns true or timeout.
func eventually(timeout time.Duration, check func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if check() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// collector is a running modelgate binary.
type collector struct {
	grpc, admin string
	token       string
	log         *logBuffer
}

// startCollector starts the release binary on ephemeral ports with token
// authentication on, and waits until it listens.
func startCollector(t testing.TB, token string, env ...string) *collector {
	t.Helper()
	cmd := exec.Command(modelgateBin(t),
		"--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0")
	cmd.Env = cleanEnv(append([]string{"MODELGATE_LOG=info", "MODELGATE_AUTH__TOKEN=" + token}, env...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	log := &logBuffer{}
	cmd.Stdout = io.Discard
	startProcess(t, cmd)
	listening := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(stderr)
		for scanner.Scan() {
			line := scanner.Text()
			fmt.Fprintln(log, line)
			if strings.Contains(line, "listening") {
				select {
				case listening <- line:
				default:
				}
			}
		}
	}()
	var line string
	select {
	case line = <-listening:
	case <-time.After(startTimeout):
		t.Fatalf("modelgate did not start within %v:\n%s", startTimeout, log)
	}
	addr := func(key string) string {
		for _, word := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(word, key); ok {
				return v
			}
		}
		t.Fatalf("no %s in %q", key, line)
		return ""
	}
	return &collector{grpc: addr("otlp_grpc="), admin: addr("admin="), token: token, log: log}
}

// adminURL is the admin port's URL of path.
func (c *collector) adminURL(path string) string {
	return "http://" + c.admin + path
}

// verdict asks /api/v1/verdict (with the token) for the outcome on a
// candidate.
func (c *collector) verdict(t testing.TB, service, candidate string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.adminURL("/api/v1/verdict?service="+
		url.QueryEscape(service)+"&candidate="+url.QueryEscape(candidate)), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("verdict: %v\n%s", err, c.log)
	}
	defer resp.Body.Close()
	var body struct {
		Outcome string `json:"outcome"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("verdict: HTTP %d, %v", resp.StatusCode, err)
	}
	return body.Outcome
}

// replay runs `modelgate replay SCENARIO` against the collector (the token
// sent the way every OpenTelemetry exporter reads it) at rate requests/s,
// to completion.
func (c *collector) replay(t testing.TB, scenario string, rate int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, modelgateBin(t), "replay", scenario,
		"--endpoint", "http://"+c.grpc, "--rate", fmt.Sprint(rate))
	cmd.Env = cleanEnv("MODELGATE_LOG=warn", "OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20"+c.token)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("modelgate replay %s: %v\n%s", scenario, err, out)
	}
	if !strings.Contains(string(out), " 0 spans failed") {
		t.Fatalf("modelgate replay %s lost spans:\n%s", scenario, out)
	}
}

// incidents replays the lending incident (v1.3 regresses against v1.2) and
// the A/A scenario (v2 the same as v1) into a fresh collector and waits
// until the verdicts are in: REGRESSION for lending-api v1.3, PASS for
// aa-api v2.
func incidents(t testing.TB) *collector {
	t.Helper()
	c := startCollector(t, "rollout-test-token")
	c.replay(t, "lending", 500)
	c.replay(t, "aa", 3000)
	for _, want := range []struct{ service, candidate, outcome string }{
		{"lending-api", "v1.3", "VERDICT_OUTCOME_REGRESSION"},
		{"aa-api", "v2", "VERDICT_OUTCOME_PASS"},
	} {
		var got string
		if !eventually(20*time.Second, func() bool {
			got = c.verdict(t, want.service, want.candidate)
			return got == want.outcome
		}) {
			t.Fatalf("%s %s: verdict %s, want %s\n%s", want.service, want.candidate, got, want.outcome, c.log)
		}
	}
	return c
}
