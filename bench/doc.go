// Package bench is the load generator behind `tcache bench`, a
// memtier_benchmark-style tool with which operators measure a tcache node or
// cluster (or memcached, for comparison), and the side-by-side comparison
// behind `tcache bench compare`.
//
// # Contract
//
// Run takes an Options value (cmd/tcache turns memtier's flags into it; this
// package reads no flags, environment or files and never exits) and returns
// a Report: per command type (sets, gets, both) the request count, hits,
// misses, throughput, KB/s and latency percentiles, plus the bench
// process's own CPU seconds per million requests. WriteText renders it as
// memtier does, WriteJSON as JSON. Compare starts memcached and tcache and
// runs the named Workloads against both, A B A B …; Comparison renders the
// markdown that docs/benchmarks.md holds between CompareBegin and
// CompareEnd.
//
// # How a run works
//
//	Threads × Clients clients, one TCP connection per client and server
//	   │ one goroutine per connection, Pipeline requests in flight
//	   ▼
//	ratioSchedule ── set or get? exact SET:GET mix over every window
//	keyGen (R S G P Z) ── key number → KeyPrefix+decimal, in a reused buffer
//	ketama ── with several servers, keys the connection's server does not
//	          own are skipped (each connection sees its server's share)
//	values ── random bytes at a random offset of a pool filled once per run
//	          from Seed (Options.CompressibleData: memtier's fixed pattern)
//	appendSet / appendGet ── request bytes appended to one write buffer;
//	          one write(2) per refill of the window, not per request
//	readSetReply / readGetReply ── replies parsed in place in the
//	          bufio.Reader (values skipped with Discard), latency recorded
//	          in the connection's HDR histograms (µs, 3 significant digits)
//	   ▼
//	summarize ── counters added, histograms merged, percentiles taken
//
// The window is refilled only when every reply that has arrived has been
// handled, so a pipeline costs one write, and nothing on this path
// allocates: tests pin encoder, parser and the whole per-request cycle at 0
// allocations (testing.AllocsPerRun).
//
// # Counting
//
// A get of N keys (MultiKeyGet) is one request (one latency sample, one
// "Gets" op) and N keys: Hits + Misses = N per get, as the server counts
// cmd_get, get_hits and get_misses. A set is one request and one cmd_set.
// The tests run the tool against a real tcache (and the binary protocol
// against memcached) and require the server's stats deltas to equal the
// report exactly. When a time-bounded run ends, requests in flight are
// still answered and counted, so the numbers never undercount what the
// server did. SERVER_ERROR and NOT_STORED replies are counted as requests
// and reported as ServerErrors; a reply that is not valid memcached
// protocol ends the run with ErrProtocol.
//
// # Protocols
//
//	memcache_text    set <key> 0 <exp> <n>\r\n<data>\r\n  → STORED
//	                 get <k1> [<k2> …]\r\n                → VALUE …/END
//	memcache_meta    ms <key> <n> T<exp> F0\r\n<data>\r\n → HD
//	                 mg <key> v\r\n (one per key)        → VA <n>/EN
//	memcache_binary  SET (extras: flags, exptime); GET for one key;
//	                 GETKQ per key + NOOP for several (only hits answer)
//
// Before a binary run every server is sent a binary NOOP: a server that does
// not speak the binary protocol fails the run with ErrUnsupported at once
// instead of hanging.
//
// # Keys
//
// R uniform; S sequential from KeyMinimum, wrapping, per connection; P
// sequential over the connection's own contiguous part of the range (all
// parts together cover it exactly once); G normal around KeyMedian with
// KeyStddev, redrawn outside the range; Z Zipfian with KeyZipfExp (rank r ∝
// 1/r^exp, KeyMinimum the hottest), sampled by rejection-inversion so any
// exponent > 0 works. Placement over several servers is libketama's: 160
// MD5-derived points per server (see ketama).
package bench
