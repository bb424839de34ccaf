// Package protocol serves the memcached protocols over TCP.
package protocol
