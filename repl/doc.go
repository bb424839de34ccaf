// Package repl is tcache's asynchronous master-master replication.
//
// Its contract (DESIGN.md): every node has a persistent random node id and
// its own numbered log of the writes its own clients made. A link pulls: a
// node asks each peer for the peer's log from the offset it has applied,
// applies each record through the engine with the conflict rule (the higher
// version wins: hybrid logical clock, then node id) and records "applied up
// to seq N" in the same batch as the data. When the peer no longer holds that
// offset, or its log history changed, the node does a full resync from a
// snapshot and continues streaming. Links reconnect by themselves with
// backoff, may require a shared secret and TLS, form a full mesh for more
// than two nodes, and report lag (records and milliseconds) per peer.
//
// The package is empty today: it arrives with the replication issue.
package repl
