package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"ddpm/internal/tlsauth"
)

// certsCmd groups the certificate tooling.
var certsCmd = &cobra.Command{
	Use:   "certs",
	Short: "Make the TLS material (CA, node certificate, join secret) of a cluster",
}

var certsInitFlags struct {
	hosts []string
	days  int
}

var certsInitCmd = &cobra.Command{
	Use:   "init DIR",
	Short: "Make a CA, a node certificate and a join secret in DIR (never overwrites)",
	Long: `Make the security material of one cluster in DIR:

  ca.crt, ca.key       a new CA (ECDSA P-256); keep ca.key off the nodes
  node.crt, node.key   one node certificate for server and client use, signed by the CA, naming
                       ddpm-node, localhost, 127.0.0.1, ::1 and every --hosts entry
  join-secret          32 random bytes (hex) that every process of the run must present

Files are created with mode 0600; if any already exists nothing is written. Every process then
takes --certs DIR (Kubernetes: mount ca.crt, node.crt, node.key and join-secret from a secret).
Make one directory per run: a process trusts every server its CA vouches for, so under a CA
shared by two runs one pointed at the other run's address would send it its join secret.`,
	Args: cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		if d := certsInitFlags.days; d < 1 || d > maxCertDays {
			return withExit(2, fmt.Errorf("--days %d: want 1..%d", d, maxCertDays))
		}
		dir := args[0]
		if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
			return withExit(2, fmt.Errorf("certs init %s: a file, not a directory (give a new or empty directory to make the certificates in)", dir))
		}
		paths, err := tlsauth.Init(dir, tlsauth.InitOptions{Hosts: certsInitFlags.hosts, Days: certsInitFlags.days})
		if err != nil {
			return withExit(2, certsInitError(dir, err))
		}
		b, err := tlsauth.Load(tlsauth.Config{Dir: args[0]})
		if err != nil { // the files just written must load; anything else is a bug worth reporting
			return withExit(1, err)
		}
		out := cmd.OutOrStdout()
		for _, p := range paths {
			fmt.Fprintln(out, "wrote", p)
		}
		fmt.Fprintln(out, b)
		return nil
	},
}

// maxCertDays is the longest validity tlsauth.Init issues (100 years).
const maxCertDays = 100 * 365

// certsInitError words tlsauth.Init's refusals in the command's terms: a file that exists
// ("certs init: DIR/ca.crt already exists (remove it ...)") and a bad --hosts entry
// (`--hosts "host:7000": give a host name or IP without a port`), without the package's
// prefixes, and a dir this user may not write ("certs init DIR: permission denied (...)", was
// "tlsauth: mkdir DIR: permission denied"); errors.Is still finds tlsauth.ErrExists,
// tlsauth.ErrBadOption and os.ErrPermission. Other errors are returned as they are.
func certsInitError(dir string, err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, tlsauth.ErrExists):
		msg = "certs init: " + strings.TrimPrefix(msg, tlsauth.ErrExists.Error()+": ")
	case errors.Is(err, os.ErrPermission):
		msg = fmt.Sprintf("certs init %s: permission denied (give a directory this user may create and write)", dir)
	case errors.Is(err, tlsauth.ErrBadOption):
		msg = strings.TrimPrefix(msg, tlsauth.ErrBadOption.Error()+": ")
		if rest, ok := strings.CutPrefix(msg, "host "); ok {
			msg = "--hosts " + rest
		}
	default:
		return err
	}
	return rewordedError{msg: msg, err: err}
}

// rewordedError is err with another text.
type rewordedError struct {
	msg string
	err error
}

func (e rewordedError) Error() string { return e.msg }
func (e rewordedError) Unwrap() error { return e.err }

func init() {
	f := certsInitCmd.Flags()
	f.StringSliceVar(&certsInitFlags.hosts, "hosts", nil, "extra DNS names or IPs for the node certificate, comma-separated (wildcards like *.ddpm.ns.svc.cluster.local allowed)")
	f.IntVar(&certsInitFlags.days, "days", 365, "validity of the certificates in days")
	certsCmd.AddCommand(certsInitCmd)
	rootCmd.AddCommand(certsCmd)
}

// loadSecurity loads the --certs/--insecure choice of a command (exit status 2 on a missing or
// unusable directory, or on neither/both flags) and logs refused peers on log.
func loadSecurity(cfg *tlsauth.Config, log *slog.Logger) (*tlsauth.Bundle, error) {
	c := *cfg
	c.Logger = log
	b, err := tlsauth.Load(c)
	if err != nil {
		return nil, withExit(2, err)
	}
	return b, nil
}
