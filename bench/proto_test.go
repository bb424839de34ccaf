package bench

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func keysOf(ks ...string) *keyList {
	var k keyList
	for _, s := range ks {
		k.buf = append(k.buf, s...)
		k.ends = append(k.ends, len(k.buf))
	}
	return &k
}

func TestEncodeRequests(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []byte
		want string
	}{
		{"text set", appendSet(nil, wireText, []byte("k1"), []byte("hello"), 0), "set k1 0 0 5\r\nhello\r\n"},
		{"text set exptime", appendSet(nil, wireText, []byte("k1"), []byte("v"), 300), "set k1 0 300 1\r\nv\r\n"},
		{"text get", appendGet(nil, wireText, keysOf("k1")), "get k1\r\n"},
		{"text multi get", appendGet(nil, wireText, keysOf("a", "bb", "c")), "get a bb c\r\n"},
		{"meta set", appendSet(nil, wireMeta, []byte("k1"), []byte("hello"), 7), "ms k1 5 T7 F0\r\nhello\r\n"},
		{"meta get", appendGet(nil, wireMeta, keysOf("k1")), "mg k1 v\r\n"},
		{"meta multi get", appendGet(nil, wireMeta, keysOf("a", "b")), "mg a v\r\nmg b v\r\n"},
		{"binary set", appendSet(nil, wireBinary, []byte("k"), []byte("vv"), 0x01020304),
			"\x80\x01\x00\x01\x08\x00\x00\x00\x00\x00\x00\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" +
				"\x00\x00\x00\x00\x01\x02\x03\x04kvv"},
		{"binary get", appendGet(nil, wireBinary, keysOf("ab")),
			"\x80\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00ab"},
		{"binary multi get", appendGet(nil, wireBinary, keysOf("a", "b")),
			"\x80\x0d\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01" + strings.Repeat("\x00", 12) + "a" +
				"\x80\x0d\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01" + strings.Repeat("\x00", 12) + "b" +
				"\x80\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" + strings.Repeat("\x00", 12)},
	} {
		if string(tc.got) != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, tc.got, tc.want)
		}
	}
}

// binReply builds a binary response.
func binReply(op byte, status uint16, extras, key, value string) string {
	h := make([]byte, 24)
	h[0], h[1] = binResMagic, op
	h[2], h[3] = byte(len(key)>>8), byte(len(key))
	h[4] = byte(len(extras))
	h[6], h[7] = byte(status>>8), byte(status)
	n := len(extras) + len(key) + len(value)
	h[8], h[9], h[10], h[11] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return string(h) + extras + key + value
}

func TestParseReplies(t *testing.T) {
	for _, tc := range []struct {
		name     string
		wire     wireProto
		keys     int // 0: a set reply
		reply    string
		hits     int
		err      error
		leftover string // what must remain unread
	}{
		{"text stored", wireText, 0, "STORED\r\nX", 0, nil, "X"},
		{"text not stored", wireText, 0, "NOT_STORED\r\n", 0, ErrServer, ""},
		{"text server error", wireText, 0, "SERVER_ERROR out of memory storing object\r\n", 0, ErrServer, ""},
		{"text set garbage", wireText, 0, "ERROR\r\n", 0, ErrProtocol, ""},
		{"text miss", wireText, 1, "END\r\nX", 0, nil, "X"},
		{"text hit", wireText, 1, "VALUE k 0 5\r\nhello\r\nEND\r\nX", 1, nil, "X"},
		{"text hit with cas", wireText, 1, "VALUE k 0 5 99\r\nhel\nn\r\nEND\r\n", 1, nil, ""},
		{"text multi", wireText, 3, "VALUE a 0 1\r\nx\r\nVALUE c 7 2\r\nyz\r\nEND\r\n", 2, nil, ""},
		{"text bad block", wireText, 1, "VALUE k 0 5\r\nhelloXXEND\r\n", 0, ErrProtocol, ""},
		{"text bad size", wireText, 1, "VALUE k 0 x\r\n", 0, ErrProtocol, ""},
		{"text truncated", wireText, 1, "VALUE k 0 5\r\nhel", 0, io.ErrUnexpectedEOF, ""},
		{"meta stored", wireMeta, 0, "HD\r\n", 0, nil, ""},
		{"meta not stored", wireMeta, 0, "NS\r\n", 0, ErrServer, ""},
		{"meta miss", wireMeta, 1, "EN\r\n", 0, nil, ""},
		{"meta hit", wireMeta, 1, "VA 5\r\nhello\r\nX", 1, nil, "X"},
		{"meta hit flags", wireMeta, 1, "VA 2 f0\r\nhi\r\n", 1, nil, ""},
		{"meta multi", wireMeta, 3, "VA 1\r\na\r\nEN\r\nVA 1\r\nb\r\n", 2, nil, ""},
		{"meta garbage", wireMeta, 1, "ERROR\r\n", 0, ErrProtocol, ""},
		{"binary stored", wireBinary, 0, binReply(binOpSet, 0, "", "", "") + "X", 0, nil, "X"},
		{"binary set error", wireBinary, 0, binReply(binOpSet, 0x82, "", "", "out of memory"), 0, ErrServer, ""},
		{"binary hit", wireBinary, 1, binReply(binOpGet, 0, "\x00\x00\x00\x00", "", "hello"), 1, nil, ""},
		{"binary miss", wireBinary, 1, binReply(binOpGet, 1, "", "", "Not found"), 0, nil, ""},
		{"binary multi", wireBinary, 3, binReply(binOpGetKQ, 0, "\x00\x00\x00\x00", "a", "x") +
			binReply(binOpGetKQ, 0, "\x00\x00\x00\x00", "c", "yz") + binReply(binOpNoop, 0, "", "", "") + "X", 2, nil, "X"},
		{"binary bad magic", wireBinary, 1, "ERROR\r\n" + strings.Repeat(" ", 20), 0, ErrProtocol, ""},
	} {
		br := bufio.NewReader(strings.NewReader(tc.reply))
		var hits, n int
		var err error
		if tc.keys == 0 {
			n, err = readSetReply(br, tc.wire)
		} else {
			hits, n, err = readGetReply(br, tc.wire, tc.keys)
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if !errors.Is(err, tc.err) || hits != tc.hits {
			t.Errorf("%s: hits %d err %v, want %d %v", tc.name, hits, err, tc.hits, tc.err)
			continue
		}
		if tc.err == nil {
			rest, _ := io.ReadAll(br)
			if string(rest) != tc.leftover {
				t.Errorf("%s: left %q unread, want %q", tc.name, rest, tc.leftover)
			}
			if n != len(tc.reply)-len(tc.leftover) {
				t.Errorf("%s: %d bytes counted, want %d", tc.name, n, len(tc.reply)-len(tc.leftover))
			}
		}
	}
}

// loopReader replays the same bytes forever, so the parsers can be
// measured without a socket.
type loopReader struct {
	data []byte
	off  int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.data[r.off:])
		n += c
		r.off = (r.off + c) % len(r.data)
	}
	return n, nil
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	value := bytes.Repeat([]byte("v"), 100)
	keys := &keyList{buf: make([]byte, 0, 256), ends: make([]int, 0, 16)}
	out := make([]byte, 0, 4096)
	for _, w := range []wireProto{wireText, wireMeta, wireBinary} {
		if n := testing.AllocsPerRun(1000, func() {
			keys.reset()
			for i := range 10 {
				keys.add("memtier-", uint64(1_000_000+i))
			}
			out = appendSet(out[:0], w, keys.key(0), value, 0)
			out = appendGet(out, w, keys)
		}); n != 0 {
			t.Errorf("proto %d: encoding allocates %.1f times per request", w, n)
		}
	}

	for _, tc := range []struct {
		name  string
		wire  wireProto
		keys  int
		reply string
	}{
		{"text set", wireText, 0, "STORED\r\n"},
		{"text hit", wireText, 1, "VALUE memtier-1 0 100\r\n" + string(value) + "\r\nEND\r\n"},
		{"text miss", wireText, 1, "END\r\n"},
		{"meta set", wireMeta, 0, "HD\r\n"},
		{"meta hit", wireMeta, 1, "VA 100\r\n" + string(value) + "\r\n"},
		{"meta miss", wireMeta, 1, "EN\r\n"},
		{"binary set", wireBinary, 0, binReply(binOpSet, 0, "", "", "")},
		{"binary hit", wireBinary, 1, binReply(binOpGet, 0, "\x00\x00\x00\x00", "", string(value))},
		{"binary miss", wireBinary, 1, binReply(binOpGet, 1, "", "", "Not found")},
	} {
		br := bufio.NewReaderSize(&loopReader{data: []byte(tc.reply)}, 64<<10)
		if n := testing.AllocsPerRun(1000, func() {
			var err error
			if tc.keys == 0 {
				_, err = readSetReply(br, tc.wire)
			} else {
				_, _, err = readGetReply(br, tc.wire, tc.keys)
			}
			if err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: parsing allocates %.1f times per reply", tc.name, n)
		}
	}
}

func BenchmarkEncodeGet(b *testing.B) {
	keys := &keyList{}
	out := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		keys.reset()
		keys.add("memtier-", 1234567)
		out = appendGet(out[:0], wireText, keys)
	}
}

func BenchmarkEncodeSet100(b *testing.B) {
	keys := &keyList{}
	value := bytes.Repeat([]byte("v"), 100)
	out := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		keys.reset()
		out = appendSet(out[:0], wireText, keys.add("memtier-", 1234567), value, 0)
	}
}

func BenchmarkParseGetHit100(b *testing.B) {
	for _, tc := range []struct {
		name  string
		wire  wireProto
		reply string
	}{
		{"text", wireText, "VALUE memtier-1234567 0 100\r\n" + strings.Repeat("v", 100) + "\r\nEND\r\n"},
		{"meta", wireMeta, "VA 100\r\n" + strings.Repeat("v", 100) + "\r\n"},
		{"binary", wireBinary, binReply(binOpGet, 0, "\x00\x00\x00\x00", "", strings.Repeat("v", 100))},
	} {
		b.Run(tc.name, func(b *testing.B) {
			br := bufio.NewReaderSize(&loopReader{data: []byte(tc.reply)}, 64<<10)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := readGetReply(br, tc.wire, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkKetamaServer(b *testing.B) {
	k := newKetama([]string{"10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"})
	key := []byte("memtier-1234567")
	b.ReportAllocs()
	for b.Loop() {
		k.server(key)
	}
}

// FuzzReadGetReply feeds arbitrary bytes to the reply parsers: they may
// fail, but never panic or claim more hits than keys.
func FuzzReadGetReply(f *testing.F) {
	f.Add([]byte("VALUE k 0 5\r\nhello\r\nEND\r\n"), uint8(0), uint8(1))
	f.Add([]byte("VA 1\r\na\r\nEN\r\n"), uint8(1), uint8(2))
	f.Add([]byte(binReply(binOpGetKQ, 0, "\x00\x00\x00\x00", "a", "x")+binReply(binOpNoop, 0, "", "", "")), uint8(2), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, wire, keys uint8) {
		w := wireProto(wire % 3)
		nk := int(keys%8) + 1
		br := bufio.NewReader(bytes.NewReader(data))
		hits, n, err := readGetReply(br, w, nk)
		if err == nil && (hits > nk && w != wireText || n > len(data)) {
			t.Fatalf("%d hits of %d keys, %d of %d bytes", hits, nk, n, len(data))
		}
		br = bufio.NewReader(bytes.NewReader(data))
		if n, _ := readSetReply(br, w); n > len(data) {
			t.Fatalf("set reply: %d of %d bytes", n, len(data))
		}
	})
}

// TestClientRequestCycleDoesNotAllocate covers what a connection does per
// request beyond the wire: key generation (ketama routing included),
// scheduling, the in-flight ring, counters and histogram recording.
func TestClientRequestCycleDoesNotAllocate(t *testing.T) {
	for _, servers := range [][]string{{"127.0.0.1:1"}, {"127.0.0.1:1", "127.0.0.1:2"}} {
		o := Options{Servers: servers, Pipeline: 4, MultiKeyGet: 3, DataSizeMin: 10, DataSizeMax: 100, SetRatio: 1, GetRatio: 1}
		o.EnsureDefaults()
		var ring *ketama
		if len(servers) > 1 {
			ring = newKetama(servers)
		}
		c := newClient(&o, nil, 0, ring, 0, 1, time.Now(), randomValues(&o))
		// Replies for a set then a 3-key get, replayed forever.
		c.br = bufio.NewReaderSize(&loopReader{data: []byte("STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n")}, 64<<10)
		if n := testing.AllocsPerRun(1000, func() {
			c.out = c.out[:0]
			c.encode(c.now())
			c.encode(c.now())
			if err := c.readReply(); err != nil {
				t.Fatal(err)
			}
			if err := c.readReply(); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%d servers: a set and a get allocate %.1f times", len(servers), n)
		}
	}
}
