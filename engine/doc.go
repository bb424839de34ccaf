// Package engine implements memcached semantics over a bounded RAM tier.
package engine
