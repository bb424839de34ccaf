package protocol

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcache/tcache/internal/clock"
)

// binaryExchange sends frames (the DSL of binary_dsl_test.go) plus the sync
// noop and returns the decoded reply frames.
func binaryExchange(t *testing.T, c net.Conn, input string) [][]byte {
	t.Helper()
	req, err := encodeBinaryInput(input)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(append(req, binarySentinel()...)); err != nil {
		t.Fatal(err)
	}
	reply, closed, err := readBinaryReply(c, true)
	if err != nil || closed {
		t.Fatalf("reply: %v closed=%v %q", err, closed, reply)
	}
	frames, rest, _ := splitBinaryReply(reply)
	if len(rest) > 0 {
		t.Fatalf("trailing bytes %q", rest)
	}
	return frames
}

// statFrames maps stat names to values from stat response frames, and
// checks the empty terminator frame ends them.
func statFrames(t *testing.T, frames [][]byte) map[string]string {
	t.Helper()
	m := map[string]string{}
	for i, f := range frames {
		h := parseBinHeader(f)
		if h.opcode != opStat || h.status != statusOK {
			t.Fatalf("frame %d: %s", i, renderBinaryFrame(f))
		}
		body := f[binHeaderLen:]
		if h.keyLen == 0 {
			if i != len(frames)-1 || len(body) != 0 {
				t.Fatalf("terminator at %d of %d: %s", i, len(frames), renderBinaryFrame(f))
			}
			return m
		}
		m[string(body[:h.keyLen])] = string(body[h.keyLen:])
	}
	t.Fatal("no terminator frame")
	return nil
}

// The general and settings stat groups over binary: same keys as text.
func TestBinaryStats(t *testing.T) {
	_, addr := startServer(t, clock.NewFake(time.Now()), Options{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	all := statFrames(t, binaryExchange(t, c, "req op=set key=a value=1\nreq op=stat")[1:])
	for _, k := range []string{"pid", "uptime", "version", "curr_items", "cmd_set", "get_hits", "tcache_version"} {
		if _, ok := all[k]; !ok {
			t.Errorf("stat %s missing", k)
		}
	}
	if all["curr_items"] != "1" || all["version"] != memcachedVersion {
		t.Errorf("curr_items %q version %q", all["curr_items"], all["version"])
	}
	settings := statFrames(t, binaryExchange(t, c, "req op=stat key=settings"))
	if settings["binding_protocol"] != "auto-negotiate" || settings["item_size_max"] != "1048576" {
		t.Errorf("settings: binding_protocol %q item_size_max %q", settings["binding_protocol"], settings["item_size_max"])
	}
}

// -B ascii reads a binary frame as text; -B binary closes on text; both are
// reported as binding_protocol.
func TestProtocolOption(t *testing.T) {
	noop := appendBinHeader(nil, &binHeader{magic: binReqMagic, opcode: opNoop, opaque: 7})
	for _, tc := range []struct {
		proto, binding string
		send           []byte
		want           string // rendered reply
	}{
		// memcached -B ascii: the 24 bytes hold a "\n" (the noop opcode),
		// so "\x80" is read as a line: ERROR.
		{ProtocolASCII, "ascii", noop, "ERROR\n"},
		// Text is garbage once a full header has arrived.
		{ProtocolBinary, "binary", []byte("get aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"), "<closed>\n"},
		{ProtocolBinary, "binary", noop, "res op=noop status=ok opaque=7\n"},
		{ProtocolAuto, "auto-negotiate", []byte("version\r\n"), "VERSION 1.6.18\n"},
	} {
		_, addr := startServer(t, clock.NewFake(time.Now()), Options{Protocol: tc.proto})
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(tc.send)
		reply, closed, err := readBinaryReply(c, false)
		if err != nil {
			t.Fatal(err)
		}
		if got := renderBinaryReply(reply, closed); got != tc.want {
			t.Errorf("Protocol %s, send %q: got %q, want %q", tc.proto, tc.send, got, tc.want)
		}
		c.Close()
		c, _ = net.Dial("tcp", addr)
		c.Write([]byte("stats settings\r\n"))
		if tc.proto == ProtocolBinary {
			c.Close()
			c, _ = net.Dial("tcp", addr)
			c.Write(append(appendBinHeader(nil, &binHeader{magic: binReqMagic, opcode: opStat, keyLen: 8, bodyLen: 8}), "settings"...))
		}
		reply, _, _ = readBinaryReply(c, false)
		if !bytes.Contains(reply, []byte("binding_protocol")) || !bytes.Contains(reply, []byte(tc.binding)) {
			t.Errorf("Protocol %s: stats settings lacks binding_protocol %s", tc.proto, tc.binding)
		}
		c.Close()
	}
	bad := Options{Protocol: "udp"}
	bad.EnsureDefaults()
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "Protocol") {
		t.Errorf("Validate(Protocol udp) = %v", err)
	}
}

// binarySeeds returns the request bytes of every testdata/binary script.
func binarySeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	files, _ := filepath.Glob("testdata/binary/*.txt")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// Each directive's input ends at its "----" line.
		for _, block := range strings.Split(string(b), "\n\n") {
			lines := strings.Split(block, "\n")
			var in []string
			for _, l := range lines {
				if l == "----" {
					break
				}
				if strings.HasPrefix(l, "req ") || strings.HasPrefix(l, "raw ") {
					in = append(in, l)
				}
			}
			if req, err := encodeBinaryInput(strings.Join(in, "\n")); err == nil && len(req) > 0 {
				seeds = append(seeds, req)
			}
		}
	}
	return seeds
}

// FuzzBinaryProtocol feeds arbitrary bytes, after a binary magic byte, to a
// connection over a real engine: it must never panic, and every reply must
// be well-framed binary responses.
func FuzzBinaryProtocol(f *testing.F) {
	for _, s := range binarySeeds(f) {
		f.Add(s)
	}
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	srv, err := NewServer(Options{Clock: clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, newTestEngine(f, clk))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, l := newLoopConn(srv)
		c.proto = protoBinary
		out, _ := l.exchange(c, in)
		for len(out) > 0 {
			if len(out) < binHeaderLen || out[0] != binResMagic {
				t.Fatalf("reply is not a response frame: %q", out)
			}
			n := binHeaderLen + int(binary.BigEndian.Uint32(out[8:]))
			if len(out) < n {
				t.Fatalf("truncated response frame: %q", out)
			}
			out = out[n:]
		}
	})
}

// FuzzBinaryHeader: header decoding and encoding are inverses.
func FuzzBinaryHeader(f *testing.F) {
	f.Add(binarySentinel())
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < binHeaderLen {
			return
		}
		h := parseBinHeader(b)
		if got := appendBinHeader(nil, &h); !bytes.Equal(got, b[:binHeaderLen]) {
			t.Fatalf("round trip: %x != %x", got, b[:binHeaderLen])
		}
	})
}

// TestZeroAllocsBinary: the binary protocol's get hit and miss, getk, set,
// quiet get runs ended by a noop, incr and delete cost no allocation in the
// steady state, parsing to reply, as the text and meta paths do.
func TestZeroAllocsBinary(t *testing.T) {
	c, l := newLoopConn(newLoopServer(t))
	for _, tc := range []struct{ name, input, want string }{
		{"set", "req op=set key=key:0001 value=0123456789 flags=7", "res op=set status=ok cas=1"},
		// The set above ran 201 times: the item's CAS is 202.
		{"get-hit", "req op=get key=key:0001", "res op=get status=ok cas=202 flags=7 value=0123456789"},
		{"getk-hit", "req op=getk key=key:0001", ""},
		{"get-miss", "req op=get key=nosuch:0001", ""},
		{"getq-run", "req op=getq key=key:0001\nreq op=getkq key=nosuch\nreq op=getq key=key:0001\nreq op=noop", ""},
		{"incr", "req op=set key=n value=1\nreq op=incr key=n delta=1", ""},
		{"delete-miss", "req op=delete key=nosuch", ""},
	} {
		req, err := encodeBinaryInput(tc.input)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, err := l.exchange(c, req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.want != "" && strings.TrimSpace(renderBinaryReply(got, false)) != tc.want {
			t.Fatalf("%s: got %q, want %q", tc.name, renderBinaryReply(got, false), tc.want)
		}
		if len(got) == 0 {
			t.Fatalf("%s: no reply", tc.name)
		}
		if allocs := testing.AllocsPerRun(200, func() { l.exchange(c, req) }); allocs != 0 {
			t.Errorf("%s: %v allocations per request, want 0", tc.name, allocs)
		}
	}
}
