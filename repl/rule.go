package repl

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// pullDecision is a source's answer to PULL {hist, from}, before it reads
// its log: stream from `from`, or resync (reason says why).
type pullDecision struct {
	stream bool
	reason string
}

// decidePull applies the history rule of docs/replication.md. It is pure:
// hists is the source's history list (oldest first), lastSeq its last
// durable seq, and the puller has applied history hist up to from-1.
//
// The puller may continue by offset only if what it applied is a prefix of
// the log the source holds now: it applied nothing, or hist is one of the
// source's histories and from-1 lies inside it (at most the seq before the
// history that followed, and at most lastSeq). Everything else is a resync.
// A trimmed log (ErrLogTrimmed from ReadLog) is the second reason for a
// resync; the caller finds it when it reads.
func decidePull(hists []History, lastSeq, hist, from uint64) pullDecision {
	if from == 0 {
		return pullDecision{reason: "pull from seq 0"}
	}
	n := from - 1
	if n == 0 {
		return pullDecision{stream: true}
	}
	if n > lastSeq {
		return pullDecision{reason: fmt.Sprintf("peer applied up to %d, beyond our last seq %d (we lost a tail)", n, lastSeq)}
	}
	for i, h := range hists {
		if h.ID != hist {
			continue
		}
		end := lastSeq
		if i+1 < len(hists) {
			end = hists[i+1].FirstSeq - 1
		}
		switch {
		case n > end:
			return pullDecision{reason: fmt.Sprintf("history %x ended at %d, peer applied up to %d", hist, end, n)}
		case n+1 < h.FirstSeq:
			return pullDecision{reason: fmt.Sprintf("history %x starts at %d, peer claims %d", hist, h.FirstSeq, n)}
		}
		return pullDecision{stream: true}
	}
	return pullDecision{reason: fmt.Sprintf("history %x is not ours", hist)}
}

// historiesFrom returns the suffix of hists that covers from and later
// seqs (the history holding from first). hists must be non-empty.
func historiesFrom(hists []History, from uint64) []History {
	i := 0
	for i+1 < len(hists) && hists[i+1].FirstSeq <= from {
		i++
	}
	return hists[i:]
}

// historyOf returns the id of the history holding seq, given the suffix
// from a STREAM frame.
func historyOf(hists []History, seq uint64) uint64 {
	id := hists[0].ID
	for _, h := range hists[1:] {
		if h.FirstSeq > seq {
			break
		}
		id = h.ID
	}
	return id
}

// authMAC is HMAC-SHA256(secret, role | nonce_puller | nonce_source |
// node_puller | node_source), role "pull" or "serve". dst must hold macLen
// bytes.
func authMAC(dst []byte, secret []byte, role string, pullNonce, serveNonce *[nonceLen]byte, puller, source uint64) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(role))
	m.Write(pullNonce[:])
	m.Write(serveNonce[:])
	var ids [16]byte
	binary.BigEndian.PutUint64(ids[:], puller)
	binary.BigEndian.PutUint64(ids[8:], source)
	m.Write(ids[:])
	return m.Sum(dst[:0])
}
