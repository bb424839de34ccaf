// Package protocol serves the memcached protocols over TCP: the text
// protocol (text.go, stats.go), the meta protocol (meta.go) and the binary
// protocol (binary.go, binary_header.go; docs/protocol-binary.md), answered
// byte for byte as memcached 1.6.18 answers them, over any Engine
// (*engine.Engine in production).
//
// # Serving
//
// NewServer(opts, eng) makes a Server; Serve(ln) accepts on a listener (one
// goroutine per connection, net/http style; several listeners may be served
// at once) until Shutdown(ctx), which stops accepting, lets every connection
// answer the requests already in its read buffer, flushes and closes it, and
// force-closes the rest at ctx's deadline. Serve then returns
// ErrServerClosed.
//
// # Connections
//
// Options.Protocol (memcached -B) selects the protocols: with "auto" each
// connection speaks binary if its first byte is 0x80, text otherwise.
//
// Each connection owns a pooled 16 KiB bufio.Reader and bufio.Writer.
// Requests are parsed in place: a command line is a sub-slice of the read
// buffer, split on spaces into at most 23 tokens like memcached's
// tokenize_command. Replies go into the writer, which is flushed only when the
// read buffer is drained, so a pipeline is answered in order with one write.
// A client that does not read its replies blocks the connection's writes,
// and the connection stops reading: memory per connection stays bounded
// (the buffers, plus one value of at most the item size limit). Multi-gets
// stream their values through the writer, and a get line longer than the read
// buffer is served key by key as it arrives.
//
// Connections beyond Options.MaxConns are answered
// "ERROR Too many open connections" and closed (memcached's maxconns_fast);
// connections idle for Options.IdleTimeout are closed.
//
// # Errors: keep or close
//
// As in memcached, a request that is well framed but wrong gets an error
// line and the connection stays usable:
//
//   - "ERROR" for an unknown command, an empty line or a wrong number of
//     tokens;
//   - "CLIENT_ERROR ..." for a bad argument (a key over 250 bytes, a bad
//     number) or a data block not ended by "\r\n" (bad data chunk: the
//     <bytes>+2 bytes are consumed, and what follows is read as commands);
//   - "SERVER_ERROR object too large for cache" for a value over the item
//     size limit, whose data block is swallowed unread.
//
// Input that cannot be framed closes the connection: a line with no "\n" in
// its first 2048 bytes (unless it is a get or gets), a line that looks like
// an HTTP request, and I/O errors. "noreply" silences every reply of its
// command, errors included, exactly as in memcached.
//
// # Versions
//
// `version` answers "VERSION 1.6.18", the memcached release whose behaviour
// tcache reproduces (clients require a plain X.Y.Z); tcache's own version is
// the stat tcache_version.
package protocol
