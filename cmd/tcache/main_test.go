package main

import (
	"os"
	"testing"

	"github.com/tcache/tcache/internal/testserver"
)

// TestMain removes the tcache binary that internal/testserver builds for the
// end-to-end and real-client tests of this package.
func TestMain(m *testing.M) { os.Exit(testserver.Run(m)) }
