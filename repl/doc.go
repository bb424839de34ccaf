// Package repl is tcache's asynchronous master-master replication: every
// node ships its own write-ahead log to its peers, which pull it by offset.
// docs/replication.md is the design; this comment is the contract.
//
// # Model
//
// Every node has a persistent random node id and its own log, numbered
// 1, 2, 3…, of the writes its own clients made (never of what it applied
// from a peer, so each write crosses each link exactly once in a full
// mesh). A Node runs one Link per configured peer address, pulling that
// peer, and a Server that serves its own log to whoever pulls it. A link
// asks for the peer's log from the seq after the one it has applied;
// Local.Apply applies each entry with the conflict rule (the higher version
// wins: HLC, then node id) and stores "applied peer P, history H, up to seq
// N" in the same atomic write as the data, so after a crash nothing is
// applied twice or skipped. The node id learned in HELLO keys the offsets:
// a peer whose id changed (a wiped data directory) is a new peer, pulled
// from seq 1.
//
// The source decides STREAM or RESYNC by the history rule (decidePull):
// the puller continues by offset only when what it applied is a prefix of
// the log the source holds now and the log still holds the next seq;
// otherwise it sends a snapshot, which the puller merges with the conflict
// rule (a resync never deletes anything), and then streams on from the
// snapshot's seq. There is never a partial resync across a gap.
//
// The package does no storage itself: it sees the node only through Local
// (local.go), implemented over the engine and lsm in production and over a
// map in tests (memlocal_test.go).
//
// # Wire format (version 2)
//
// A link is a byte stream (TCP, optionally TLS) of frames:
//
//	+-----------+---------+----------------------+-------------+
//	| len u32BE | type u8 | payload (len-1 bytes) | crc32c u32BE|
//	+-----------+---------+----------------------+-------------+
//	              \______ CRC-32C (Castagnoli) over these ______/
//
// len counts the type byte and the payload; it is at most
// Options.MaxRecordSize + 64 KiB + 64. A frame too large, an unknown
// type, a bad CRC or a frame that is not expected in the current state
// closes the link with a log line. Payloads (integers big-endian):
//
//	HELLO     1  magic "TCRP", version u8 = 2, flags u8 (1 = has a secret),
//	             node u64, nonce [16], history u64, last seq u64, now u64
//	             (history and last seq are 0 from the puller; now is the
//	             sender's wall clock, unix ms; version 1 had no now, and a
//	             HELLO of another version closes the link)
//	AUTH      2  HMAC-SHA256(secret, role | nonce_puller | nonce_source |
//	             node_puller u64 | node_source u64), role "pull" or "serve"
//	PULL      3  history u64, from u64 (applied seq + 1)
//	STREAM    4  from u64, last seq u64, n u32, n × (history u64, first seq u64):
//	             the histories holding from and every later seq, oldest first
//	RESYNC    5  history u64, last seq u64 (the source's state before the snapshot)
//	SNAP      6  as ENTRY, with seq 0
//	SNAP_END  7  history u64, seq u64, records u64: the snapshot's point
//	ENTRY     8  seq u64, op u8, millis u64, key len u16, key, record (the rest)
//	PROGRESS  9  seq u64: entries up to seq are shipped (the rest were skipped)
//	HEARTBEAT 10 last seq u64 (the puller sends its applied seq), now ms u64
//	ACK       11 applied seq u64
//
// The conversation: the puller sends HELLO; the source answers HELLO;
// with a secret (both sides must have one, or neither) the puller sends
// AUTH "pull" and the source, having checked it in constant time, AUTH
// "serve"; the puller sends PULL; the source answers STREAM, or RESYNC then
// SNAP* and SNAP_END, then streams ENTRY, PROGRESS and HEARTBEAT frames;
// the puller sends ACK and HEARTBEAT frames. Anything else closes the link.
// The puller refuses a source whose clock is off from its own by more than
// Options.MaxClockSkew: at the handshake (the source's HELLO time against
// the puller's send and receive times) and while streaming (a HEARTBEAT
// time ahead by more), with ErrClockSkew.
//
// # Flow control and liveness
//
// The source reads its log in chunks of about Options.ChunkBytes, encodes
// them into one reused buffer and writes it: TCP backpressure stops it when
// the puller is slow, so it never holds more than a chunk per puller. Having
// shipped everything, it sleeps until Local.LogChanged fires or its next
// heartbeat is due (which re-reads LastSeq: the bound on a missed
// notification); it does not poll. Both
// sides send a HEARTBEAT every second; a side that hears nothing for
// Options.Timeout (5 s) closes the link, and a Link redials with jittered
// exponential backoff (100 ms to 5 s). Decoding reuses the reader's buffer:
// a payload (and an Entry passed to Local.Apply) is valid until the next
// frame is read.
package repl
