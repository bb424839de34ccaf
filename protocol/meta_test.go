package protocol

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/tcache/tcache/internal/clock"
)

func TestParseMetaFlags(t *testing.T) {
	for _, tc := range []struct {
		flags string
		err   string // error line without "\r\n"; "" = none
	}{
		{"v s c f t k h l u O1 P L q I F1 C1 D1", ""},
		{"v v", "CLIENT_ERROR duplicate flag"},
		{"\xff", "CLIENT_ERROR duplicate flag"},
		{"!", "CLIENT_ERROR invalid flag"},
		{"E5", "CLIENT_ERROR invalid flag"},
		{"Tx", "CLIENT_ERROR bad token in command line format"},
		{"T", "CLIENT_ERROR bad token in command line format"},
		{"N99999999999999999999", "CLIENT_ERROR bad token in command line format"},
		{"T+5 T-0", "CLIENT_ERROR duplicate flag"},
		{"F-1", "CLIENT_ERROR bad command line format"},
		{"Tx F-1", "CLIENT_ERROR bad token in command line format"},
		{"F-1 Tx", "CLIENT_ERROR bad token in command line format"},
		{"Cx", "CLIENT_ERROR bad token in command line format"},
		{"MEE", "CLIENT_ERROR incorrect length for M token"},
		{"Jx", "CLIENT_ERROR invalid numeric initial value"},
		{"D-1", "CLIENT_ERROR invalid numeric delta value"},
		{"b", "CLIENT_ERROR error decoding key"},
		{"b !", "CLIENT_ERROR invalid flag"},
	} {
		var f metaFlags
		toks := bytes.Fields([]byte(tc.flags))
		got := parseMetaFlags(&f, []byte("foo"), toks, make([]byte, 0, 251))
		want := ""
		if tc.err != "" {
			want = tc.err + "\r\n"
		}
		if string(got) != want {
			t.Errorf("flags %q: got %q, want %q", tc.flags, got, want)
		}
	}
}

func TestParseMetaFlagsValues(t *testing.T) {
	var f metaFlags
	toks := bytes.Fields([]byte("T-1 N30 R4294967296 F4294967297 C18446744073709551615 MA J7 D9 Oab k c"))
	if e := parseMetaFlags(&f, []byte("Zm9v"), toks, make([]byte, 0, 251)); e != nil {
		t.Fatalf("unexpected error %q", e)
	}
	if f.exptime != -1 || !f.newTTL || f.autoviv != 30 || !f.vivify || f.recacheTTL != 0 ||
		f.clientFlags != 1 || f.cas != 1<<64-1 || !f.hasCAS || f.mode != 'A' || f.initial != 7 ||
		f.delta != 9 || string(f.opaque) != "Oab" || string(f.order[:f.norder]) != "TNROkc" {
		t.Fatalf("parsed %+v", f)
	}
}

func TestMetaBase64Decode(t *testing.T) {
	for _, tc := range []struct {
		in, out string
		ok      bool
	}{
		{"Zm9v", "foo", true},
		{"Zm!9v", "foo", true},
		{"Zg==Zg==", "f", true},
		{"AAEC/w==", "\x00\x01\x02\xff", true},
		{"Zm9v====", "", false},
		{"Zm9", "", false},
		{"!", "", false},
		{"====", "", false},
		{"A===", "", false},
	} {
		dst := make([]byte, 251)
		n, ok := metaBase64Decode(dst, []byte(tc.in))
		if ok != tc.ok || (ok && string(dst[:n]) != tc.out) {
			t.Errorf("%q: got %q %v, want %q %v", tc.in, dst[:n], ok, tc.out, tc.ok)
		}
	}
}

func TestCNumbers(t *testing.T) {
	for _, tc := range []struct {
		in  string
		l32 int32
		lok bool
		ull uint64
		uok bool
	}{
		{"5", 5, true, 5, true},
		{"+5", 5, true, 5, true},
		{"-5", -5, true, 0, false},
		{"-0", 0, true, 0, true},
		{"4294967296", 0, true, 4294967296, true},
		{"18446744073709551615", 0, false, 1<<64 - 1, true},
		{"18446744073709551616", 0, false, 0, false},
		{"\t7", 7, true, 7, true},
		{"7\tx", 7, true, 7, true},
		{"7x", 0, false, 0, false},
		{"", 0, false, 0, false},
		{"-", 0, false, 0, false},
	} {
		l, lok := cStrtol32([]byte(tc.in))
		u, uok := cStrtoull([]byte(tc.in))
		if l != tc.l32 || lok != tc.lok || u != tc.ull || uok != tc.uok {
			t.Errorf("%q: strtol32 %d %v, strtoull %d %v", tc.in, l, lok, u, uok)
		}
	}
}

func TestMemcachedSlabClass(t *testing.T) {
	for _, tc := range []struct{ size, cls int }{{65, 1}, {96, 1}, {97, 2}, {120, 2}, {121, 3}} {
		if got := memcachedSlabClass(tc.size); got != tc.cls {
			t.Errorf("size %d: class %d, want %d", tc.size, got, tc.cls)
		}
	}
}

func TestMetaUnit(t *testing.T) {
	c, l := newLoopConn(newLoopServer(t))
	for _, tc := range []struct{ req, want string }{
		{"mg foo v\r\n", "EN\r\n"},
		{"ms foo 3 T0 F7 c k Oop\r\nbaz\r\n", "HD c1 kfoo Oop\r\n"},
		{"mg foo v f c\r\n", "VA 3 f7 c1\r\nbaz\r\n"},
		{"mg foo s v k q\r\nmg nokey q k\r\nmn\r\n", "VA 3 s3 kfoo\r\nbaz\r\nMN\r\n"},
		{"ms foo 1 q C999\r\nx\r\nms foo 1 q\r\ny\r\n", "EX\r\n"},
		{"ms Zm9v 1 b k c\r\nz\r\n", "HD kZm9v b c3\r\n"},
		{"ms n 1\r\n5\r\nma n v D10\r\nma n q\r\nmg n v\r\n", "HD\r\nVA 2\r\n15\r\nVA 2\r\n16\r\n"},
		{"md n q\r\nmd n k O1\r\n", "NF kn O1\r\n"},
		{"ms bd 3\r\nabcde\r\n", "CLIENT_ERROR bad data chunk\r\nERROR\r\n"},
		{"ms fe 3 !\r\nabc\r\nmg fe\r\n", "CLIENT_ERROR invalid flag\r\nEN\r\n"},
		{"ms foo bar\r\nhello\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n"},
		{"mg foo s v c f t k h l u O1 P L q I F1 C1 D1 J1\r\n", "CLIENT_ERROR options flags are too long\r\n"},
		{"md foo Cx\r\nma foo MX\r\n", "CLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid mode for ma M token\r\n"},
		{"mg foo O12345678901234567890123456789012\r\n", "CLIENT_ERROR opaque token too long\r\n"},
		{"mx foo\r\nme\r\n", "ERROR\r\nCLIENT_ERROR bad command line format\r\n"},
	} {
		got, _ := l.exchange(c, []byte(tc.req))
		if string(got) != tc.want {
			t.Errorf("%q:\ngot  %q\nwant %q", tc.req, got, tc.want)
		}
	}
}

func TestMetaAllocs(t *testing.T) {
	c, l := newLoopConn(newLoopServer(t))
	l.exchange(c, []byte("ms key 3\r\nabc\r\n"))
	for _, tc := range []struct{ name, req string }{
		{"mg hit", "mg key v\r\n"},
		{"mg miss", "mg nokey v\r\n"},
		{"ms set", "ms key 3\r\nxyz\r\n"},
	} {
		req := []byte(tc.req)
		l.exchange(c, req)
		allocs := testing.AllocsPerRun(200, func() { l.exchange(c, req) })
		if allocs != 0 {
			t.Errorf("%s: %v allocations per request, want 0", tc.name, allocs)
		}
	}
}

// metaSeeds returns the requests of the meta scripts.
func metaSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	for _, path := range scriptFiles(t, "testdata/meta") {
		seeds = append(seeds, scriptInputs(t, path)...)
	}
	return seeds
}

func FuzzMetaFlags(f *testing.F) {
	for _, s := range metaSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var fl metaFlags
		toks := bytes.Fields(line)
		if len(toks) == 0 {
			return
		}
		keyBuf := make([]byte, 0, maxKeyLen+1)
		key := toks[0]
		if len(key) > maxKeyLen {
			return
		}
		parseMetaFlags(&fl, key, toks[1:], keyBuf)
		if fl.keyBinary && len(fl.key) > cap(keyBuf) {
			t.Fatalf("decoded key overflows its buffer")
		}
	})
}

// FuzzMetaProtocol sends arbitrary bytes after a meta command prefix through
// a real connection loop, then checks that a fresh connection to the same
// engine still answers correctly.
func FuzzMetaProtocol(f *testing.F) {
	for _, s := range metaSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		srv := newLoopServer(t)
		c, l := newLoopConn(srv)
		for _, prefix := range []string{"mg ", "ms ", "md ", "ma ", "me "} {
			l.exchange(c, append([]byte(prefix), in...))
		}
		// Move past any flush the input scheduled before probing.
		srv.opts.Clock.(*clock.Fake).Advance(31 * 24 * time.Hour)
		c2, l2 := newLoopConn(srv)
		got, _ := l2.exchange(c2, []byte("ms fuzzcheck 2\r\nok\r\nmg fuzzcheck v\r\n"))
		if string(got) != "HD\r\nVA 2\r\nok\r\n" {
			t.Fatalf("after fuzz input, got %q", got)
		}
	})
}

// metaOrderScript covers the meta rules that depend on flag order and on
// state the item keeps (memcached 1.6.18 applies mg/ma's T, N and R in one
// pass over the flags; a base64 key is remembered by the item). It runs
// against tcache and, when installed, memcached (TestMetaOrder).
const metaOrderScript = `# t shows the TTL at its place: before T the old one, after it the new.
send
set o 0 100 1
x
mg o t T200
mg o T300 t R400
mg o t
----
STORED
HD t100
HD t300 W
HD t300 Z

# A created item has no expiry until N (or T) is applied; the later wins.
send
mg n1 t N30 T60
mg n1 t
mg n2 N30 t T60
mg n2 t
mg n3 T60 N30 t
ma c1 N30 t T60 v
ma c1 t
ma c2 t N30 v
ma c3 N30 q
----
HD t-1 W
HD t60 Z
HD t30 W
HD t60 Z
HD t30 W
VA 1 t30
0
HD t60
VA 1 t-1
0
HD

# R before T compares the old TTL.
send
set r 0 100 1
x
mg r R400 T300 t
mg r t
----
STORED
HD t300 W
HD t300 Z

# An item stored with a base64 key echoes it encoded, also to plain-key
# fetches and to me; append and a longer incr build a new item without the
# mark, an in-place incr keeps it.
send
ms Zm9v 1 b
x
mg foo k v
ms foo 1 MA
y
mg foo k v
ms bnVt 1 b
9
ma num
mg num k
ms bnVt 2 b
10
ma num
mg num k
----
HD
VA 1 kZm9v b
x
HD
VA 2 kfoo
xy
HD
HD
HD knum
HD
HD
HD kbnVt b
`

func TestMetaOrder(t *testing.T) {
	path := t.TempDir() + "/meta_order.txt"
	if err := os.WriteFile(path, []byte(metaOrderScript), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("tcache", func(t *testing.T) {
		clk := clock.NewFake(time.Now().Truncate(time.Second))
		runScript(t, path, startTcache(t, clk), func(int) {})
	})
	t.Run("memcached", func(t *testing.T) {
		runScript(t, path, startMemcached(t, memcachedBinary(t)), func(int) {})
	})
}
