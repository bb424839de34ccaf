package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tcache/tcache/internal/testserver"
)

// TestBenchBadInput: every impossible command line is one error line on
// stderr and a non-zero exit, before any load is sent.
func TestBenchBadInput(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, closedPort, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--bogus"}, exitUsage, "unknown flag: --bogus"},
		{[]string{"--ratio", "0:0"}, exitUsage, "ratio"},
		{[]string{"--ratio", "1:x"}, exitUsage, "ratio"},
		{[]string{"--pipeline", "0"}, exitUsage, "pipeline"},
		{[]string{"-c", "0"}, exitUsage, "clients"},
		{[]string{"--key-minimum", "10", "--key-maximum", "5"}, exitUsage, "key-maximum"},
		{[]string{"--data-size-range", "100-10"}, exitUsage, "data-size-range"},
		{[]string{"--data-size-range", "abc"}, exitUsage, "data-size-range"},
		{[]string{"--data-size-range", "0-10"}, exitUsage, "data-size-range"},
		{[]string{"--expiry-range", "5-1"}, exitUsage, "expiry-range"},
		{[]string{"--key-pattern", "R:Q"}, exitUsage, "key pattern"},
		{[]string{"--key-median", "50", "--key-maximum", "10"}, exitUsage, "key-median"},
		{[]string{"-P", "redis"}, exitUsage, "protocol"},
		{[]string{"--test-time", "-3"}, exitUsage, "test-time"},
		{[]string{"--print-percentiles", "50,abc"}, exitUsage, "percentiles"},
		{[]string{"-x", "0"}, exitUsage, "run-count"},
		{[]string{"-p", closedPort, "-n", "1"}, exitRuntime, "cannot connect to 127.0.0.1:" + closedPort},
		{[]string{"compare", "--rounds", "0"}, exitUsage, "rounds"},
		{[]string{"compare", "--workloads", "nope", "--tcache", "/bin/true", "--memcached", "/bin/true"}, exitUsage, "unknown workload"},
		{[]string{"compare", "--workloads", "mixed-1k-vs-foundation", "--tcache", "/bin/true", "--memcached", "/bin/true"}, exitUsage, "--foundation"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), append([]string{"bench"}, tc.args...), &stdout, &stderr)
		lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
		if code != tc.code || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
			t.Errorf("bench %q: exit %d, stderr %q; want exit %d and one line containing %q",
				tc.args, code, stderr.String(), tc.code, tc.want)
		}
	}
}

func TestBenchReportsAndWritesJSON(t *testing.T) {
	srv := testserver.Start(t, "-m", "16", "-t", "1")
	_, port, _ := net.SplitHostPort(srv.Addr)
	jsonPath := filepath.Join(t.TempDir(), "out.json")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"bench", "-p", port, "-t", "1", "-c", "2", "-n", "200",
		"--ratio", "1:4", "--pipeline", "4", "--key-maximum", "99", "--json-out-file", jsonPath,
		"--print-percentiles", "50,90,99.9"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr is not a terminal, yet got %q", stderr.String())
	}
	for _, want := range []string{"Sets", "Gets", "Totals", "p90.00 Latency", "KB/sec", "per million requests", "Request Latency Distribution"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, stdout.String())
		}
	}
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Runs []struct {
			Totals struct {
				Count       int64
				Percentiles []struct{ P, Ms float64 } `json:"percentiles_ms"`
			}
			CPU float64 `json:"cpu_seconds_per_million_requests"`
		}
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 1 || rep.Runs[0].Totals.Count != 400 || len(rep.Runs[0].Totals.Percentiles) != 3 || rep.Runs[0].CPU <= 0 {
		t.Errorf("JSON report %s", data)
	}
}
