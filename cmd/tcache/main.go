// Command tcache is a memcached-compatible cache server.
//
//	tcache [serve] [flags]   run the server (the default command)
//	tcache version           print the version
//
// Flags follow memcached's (-p -l -m -c -t -U -I -v); every setting can also
// come from a TCACHE_* environment variable or a YAML config file (--config).
// See docs/configuration.md and configs/tcache.yaml.
//
// This is the only package of tcache that reads flags, the environment or
// files of configuration, and the only one that exits the process. Exit
// codes: 0 after a clean shutdown, 1 when the server fails at run time (the
// data_dir is locked by another tcache, a port is taken, the drain timed
// out), 2 for a usage or configuration mistake.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
)

// version is tcache's own version. Release builds set it with
//
//	go build -ldflags "-X main.version=1.2.3" ./cmd/tcache
//
// It is reported by `tcache version` and the tcache_version stat; the
// memcached `version` command answers a memcached-style version instead.
var version = "0.1.0"

// Process exit codes.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

// exitError carries the exit code for an error; errors without one are
// usage errors.
type exitError struct {
	code   int
	err    error
	logged bool // already written to the log; do not print it again
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCommand(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if !ee.logged {
			printError(stderr, err)
		}
		return ee.code
	}
	printError(stderr, err)
	return exitUsage
}

func printError(w io.Writer, err error) {
	for line := range strings.SplitSeq(err.Error(), "\n") {
		fmt.Fprintf(w, "tcache: %s\n", line)
	}
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "tcache",
		Short: "tcache is a memcached-compatible cache server",
		Long: "tcache is a memcached-compatible cache server. Without a command it serves,\n" +
			"like `tcache serve`. Settings: flags > TCACHE_* environment > --config file > defaults\n" +
			"(docs/configuration.md).",
		Args:          cobra.NoArgs,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          runServe,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetVersionTemplate("tcache {{.Version}}\n")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w (see %s --help)", err, c.CommandPath())
	})
	addServeFlags(root.Flags())
	// -V/--version as in memcached; cobra prints the version for it.
	root.Flags().BoolP("version", "V", false, "print the version and exit")

	serveCmd := &cobra.Command{
		Use:           "serve",
		Short:         "Run the cache server (the default command)",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          runServe,
	}
	addServeFlags(serveCmd.Flags())

	versionCmd := &cobra.Command{
		Use:   "version",
		Short: "Print tcache's version",
		Args:  cobra.NoArgs,
		Run: func(c *cobra.Command, _ []string) {
			fmt.Fprintf(c.OutOrStdout(), "tcache %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
	root.AddCommand(serveCmd, versionCmd)
	root.AddCommand(newBenchCommand())
	return root
}

// runServe is the action of `tcache` and `tcache serve`.
func runServe(c *cobra.Command, _ []string) error {
	opts, err := loadOptions(c.Flags())
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	return serve(c.Context(), opts, c.ErrOrStderr())
}
