package main

// Replication wiring: repl.Node over the engine and its disk tier, its TLS
// configuration from PEM files, the wait of serve_while_syncing=false, and
// the repl_* figures of `stats`.

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tcache/tcache/engine"
	"github.com/tcache/tcache/lsm"
	"github.com/tcache/tcache/protocol"
	"github.com/tcache/tcache/repl"
)

// replRecordSlack is what a record holds beyond its value (header, CRC):
// repl.Options.MaxRecordSize is at least max_item_size plus this.
const replRecordSlack = 4 << 10

// startReplication listens on replication.listen and starts the links to
// every peer. disk was opened with lsm.Options.Replicated.
func startReplication(o Options, eng *engine.Engine, disk *lsm.DB, logger *slog.Logger) (*repl.Node, error) {
	local, err := repl.NewLocal(eng, disk)
	if err != nil {
		return nil, err
	}
	ro := repl.Options{
		Listen:        o.ReplListen,
		Peers:         o.ReplPeers,
		MaxRecordSize: max(repl.DefaultMaxRecordSize, o.MaxItemSize+replRecordSlack),
		MaxClockSkew:  replClockSkew(o),
		Logger:        logger.With("component", "repl"),
	}
	if o.ReplSecret != "" {
		ro.Secret = []byte(o.ReplSecret)
	}
	if o.ReplTLSCert != "" {
		if ro.TLS, err = replicationTLS(o); err != nil {
			return nil, err
		}
	}
	node, err := repl.New(local, ro)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", o.ReplListen)
	if err != nil {
		return nil, fmt.Errorf("replication.listen %s: %w", o.ReplListen, err)
	}
	if err := node.Start(ln); err != nil {
		ln.Close()
		return nil, err
	}
	hs := disk.Histories()
	hist := make([]string, len(hs))
	for i, h := range hs {
		hist[i] = fmt.Sprintf("%016x@%d", h.ID, h.FirstSeq)
	}
	logger.Info("replication started",
		"listen", ln.Addr().String(), "peers", strings.Join(o.ReplPeers, ","),
		"node_id", fmt.Sprintf("%016x", disk.NodeID()), "log_histories", strings.Join(hist, ","),
		"log_last_seq", disk.LastSeq(), "secret", o.ReplSecret != "", "tls", ro.TLS != nil,
		"serve_while_syncing", o.ReplServeWhileSyncing, "max_clock_skew", o.ReplMaxClockSkew.String())
	return node, nil
}

// replClockSkew maps replication.max_clock_skew to repl's and the
// engine's MaxClockSkew, where 0 means the default and negative no bound.
func replClockSkew(o Options) time.Duration {
	if o.ReplMaxClockSkew == 0 {
		return -1
	}
	return o.ReplMaxClockSkew
}

// replicationTLS builds the links' TLS: this node's certificate for both
// roles (a server certificate for the peers that pull, a client one for the
// peers it pulls) and, with a CA, verification of the peers' certificates
// both ways.
func replicationTLS(o Options) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(o.ReplTLSCert, o.ReplTLSKey)
	if err != nil {
		return nil, fmt.Errorf("replication.tls: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if o.ReplTLSCA != "" {
		pool, err := loadCAPool(o.ReplTLSCA)
		if err != nil {
			return nil, fmt.Errorf("replication.tls.ca: %w", err)
		}
		cfg.RootCAs, cfg.ClientCAs, cfg.ClientAuth = pool, pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// waitCaughtUp holds the client port closed until every link has caught up
// once or replication.sync_timeout passed (then it serves anyway, with a
// warning). It reports true when a signal or ctx asked to stop meanwhile.
func waitCaughtUp(ctx context.Context, o Options, node *repl.Node, sigc <-chan os.Signal, logger *slog.Logger) (stop bool) {
	logger.Info("waiting for replication to catch up before serving clients", "sync_timeout", o.ReplSyncTimeout.String())
	wctx, cancel := context.WithTimeout(ctx, o.ReplSyncTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- node.WaitCaughtUp(wctx) }()
	select {
	case err := <-done:
		if ctx.Err() != nil {
			logger.Info("shutting down", "reason", context.Cause(ctx).Error())
			return true
		}
		if err != nil {
			logger.Warn("replication did not catch up within sync_timeout; serving clients anyway", "err", err)
		} else {
			logger.Info("replication caught up")
		}
		return false
	case sig := <-sigc:
		logger.Info("shutting down", "signal", sig.String())
		return true
	}
}

// replicationStats returns the `stats` hook: this node's id and log
// history, then per peer (configured ones in replication.peers order, then
// nodes that only pull from us) repl_peer_<n>_*.
func replicationStats(node *repl.Node, eng *engine.Engine, disk *lsm.DB) func(protocol.StatWriter) {
	id := fmt.Sprintf("%016x", disk.NodeID())
	return func(w protocol.StatWriter) {
		w.Str("repl_node_id", id)
		var hist uint64
		if hs := disk.Histories(); len(hs) > 0 {
			hist = hs[len(hs)-1].ID
		}
		w.Str("repl_log_history", fmt.Sprintf("%016x", hist))
		w.Uint("repl_log_last_seq", disk.LastSeq())
		w.Uint("repl_clock_ahead_versions", eng.ClockAhead())
		peers := node.Stats()
		w.Uint("repl_peers", uint64(len(peers)))
		for i, st := range peers {
			p := "repl_peer_" + strconv.Itoa(i) + "_"
			addr := st.Addr
			if addr == "" {
				addr = "-" // a node that pulls from us without being configured here
			}
			w.Str(p+"addr", addr)
			w.Str(p+"node_id", fmt.Sprintf("%016x", st.NodeID))
			w.Str(p+"state", st.State.String())
			w.Uint(p+"caught_up", b2u(st.CaughtUp))
			w.Uint(p+"applied_seq", st.AppliedSeq)
			w.Uint(p+"peer_last_seq", st.PeerLastSeq)
			w.Uint(p+"lag_records", st.LagRecords)
			w.Int(p+"lag_ms", st.LagMillis)
			w.Uint(p+"bytes_received", st.BytesReceived)
			w.Uint(p+"bytes_sent", st.BytesSent)
			w.Uint(p+"full_resyncs", st.FullResyncs)
			w.Uint(p+"reconnects", st.Reconnects)
			w.Int(p+"clock_offset_ms", st.ClockOffset)
			w.Uint(p+"clock_skew_refusals", st.SkewRefusals)
			w.Uint(p+"served_active", b2u(st.ServedActive))
			w.Uint(p+"served_acked_seq", st.ServedAcked)
			w.Uint(p+"served_lag_records", st.ServedLag)
			w.Uint(p+"served_bytes", st.ServedBytes)
			w.Uint(p+"served_resyncs", st.ServedResyncs)
		}
	}
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
