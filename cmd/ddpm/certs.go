package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"ddpm/internal/tlsauth"
)

// certsCmd groups the certificate tooling.
var certsCmd = &cobra.Command{
	Use:   "certs",
	Short: "Make the TLS material (CA, node certificates, join secret) of a cluster",
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
shared by two runs one pointed at the other run's address would send it its join secret.

The node certificate carries no role: any process holding it may do everything (join raft, roll
the run back). To give coordinators, trainers and operators only their own calls, make a
directory per role with ddpm certs issue --certs DIR --role ROLE --out DIR2.`,
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
			return withExit(certsExit(err), certsInitError(dir, err))
		}
		return printCertsWritten(cmd.OutOrStdout(), dir, paths)
	},
}

// printCertsWritten is the output of certs init and certs issue once the files paths are
// written in dir: a "wrote PATH" line each, then the directory as tlsauth.Load reads it (its
// bundle's one-line summary). The files just written must load: an error there is returned with
// exit status 1.
func printCertsWritten(out io.Writer, dir string, paths []string) error {
	b, err := tlsauth.Load(tlsauth.Config{Dir: dir})
	if err != nil {
		return withExit(1, err)
	}
	for _, p := range paths {
		fmt.Fprintln(out, "wrote", p)
	}
	fmt.Fprintln(out, b)
	return nil
}

// maxCertDays is the longest validity tlsauth.Init issues (100 years).
const maxCertDays = 100 * 365

// certsInitError words tlsauth.Init's refusals in the command's terms: a file that exists
// ("certs init: DIR/ca.crt already exists (remove it ...)") and a bad --hosts entry
// (`--hosts "host:7000": give a host name or IP without a port`), without the package's
// prefixes, a dir this user may not write (EACCES: "certs init DIR: permission denied (...)", was
// "tlsauth: mkdir DIR: permission denied"), and an operation the system refuses otherwise (EPERM:
// its own words, "certs init DIR: link DIR/.ca.crt.tmp1 DIR/ca.crt: operation not permitted", not
// a word on the directory's permissions); errors.Is still finds tlsauth.ErrExists,
// tlsauth.ErrBadOption and os.ErrPermission. A file that cannot be written otherwise (a full
// disk) is "certs init DIR: cannot write there (OP PATH: ERRNO)"; other errors are returned as
// they are. certsExit gives the status.
func certsInitError(dir string, err error) error {
	msg := err.Error()
	var pe *fs.PathError
	switch {
	case errors.Is(err, tlsauth.ErrExists):
		msg = "certs init: " + strings.TrimPrefix(msg, tlsauth.ErrExists.Error()+": ")
	case errors.Is(err, os.ErrPermission) && !errors.Is(err, syscall.EACCES):
		// EPERM: not the directory's mode bits (a file system refusing an operation, an
		// immutable file): the system's own words.
		msg = fmt.Sprintf("certs init %s: %s", dir, osErrorWords(err))
	case errors.Is(err, os.ErrPermission):
		msg = fmt.Sprintf("certs init %s: permission denied (give a directory this user may create and write)", dir)
	case errors.Is(err, tlsauth.ErrBadOption):
		msg = strings.TrimPrefix(msg, tlsauth.ErrBadOption.Error()+": ")
		if rest, ok := strings.CutPrefix(msg, "host "); ok {
			msg = "--hosts " + rest
		}
	case errors.As(err, &pe):
		// A full disk, an I/O error: "certs init DIR: cannot write there (write DIR/ca.crt:
		// file too large)", as certs issue words it (it was "tlsauth: write P: write P: ...").
		msg = fmt.Sprintf("certs init %s: cannot write there (%s %s: %v)", dir, pe.Op, pe.Path, pe.Err)
	default:
		return err
	}
	return rewordedError{msg: msg, err: err}
}

// certsExit is the exit status of a failed tlsauth.Init or tlsauth.Issue: 1 for a failure of the
// machine (a full disk or quota, a file size limit, an I/O error: ENOSPC, EDQUOT, EFBIG, EIO),
// which the same command succeeds at once there is room; 2 for everything else (a file that
// exists, a bad option, a directory that is missing, unusable or not this user's to write).
func certsExit(err error) int {
	for _, e := range []error{syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG, syscall.EIO} {
		if errors.Is(err, e) {
			return 1
		}
	}
	return 2
}

// osErrorWords is the system's own account of err: "OP PATH: ERRNO" of the *fs.PathError or
// "link OLD NEW: ERRNO" of the *os.LinkError inside it, else err's text.
func osErrorWords(err error) string {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &le):
		return le.Error()
	case errors.As(err, &pe):
		return pe.Error()
	}
	return err.Error()
}

// inDir reports whether p is dir or a path inside it (lexically).
func inDir(dir, p string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(p))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
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

	f = certsIssueCmd.Flags()
	f.StringVar(&certsIssueFlags.certs, "certs", "", "`DIR` made by ddpm certs init (its ca.crt, ca.key and join-secret are read)")
	f.StringVar(&certsIssueFlags.role, "role", "", "role of the new certificate: coordinator, trainer or operator")
	f.StringVar(&certsIssueFlags.out, "out", "", "`DIR` to write ca.crt, node.crt, node.key and join-secret in (new or empty)")
	f.StringSliceVar(&certsIssueFlags.hosts, "hosts", nil, "extra DNS names or IPs for the certificate, comma-separated (as for certs init)")
	f.IntVar(&certsIssueFlags.days, "days", 0, "validity in days (0: until the CA expires)")
	certsCmd.AddCommand(certsIssueCmd)
	rootCmd.AddCommand(certsCmd)
}

var certsIssueFlags struct {
	certs, role, out string
	hosts            []string
	days             int
}

var certsIssueCmd = &cobra.Command{
	Use:   "issue --certs DIR --role ROLE --out DIR2",
	Short: "Make a certificate of one role (coordinator, trainer, operator) from the CA of a certs init directory",
	Long: `Make a certificate directory for one role from the CA of DIR (made by ddpm certs init):

  ca.crt, join-secret  copied from DIR
  node.crt, node.key   a new certificate signed by DIR's CA, carrying the role as the URI
                       ddpm:role/ROLE, naming ddpm-node, localhost, 127.0.0.1, ::1 and every
                       --hosts entry

DIR2 never receives ca.key. Every process takes --certs DIR2 like --certs DIR. What each role
may do:

  coordinator  raft between replicas, every coordinator call
  trainer      join, heartbeat, leave, watch, report, checkpoint ready, status; the all-reduce
               ring and checkpoint fetch between trainers. No raft, no rollback.
  operator     ddpm status, ddpm loss, ddpm checkpoint rollback, ddpm checkpoint fetch

A refused call gets PERMISSION_DENIED naming the role and the method. DIR's own node
certificate carries no role and may still do everything: once the processes hold role
certificates, keep DIR (and its node.key) off the nodes. Files are created with mode 0600; if
any already exists nothing is written.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		f := certsIssueFlags
		switch {
		case f.certs == "":
			return withExit(2, errors.New("certs issue: --certs DIR is required (the directory ddpm certs init made, holding ca.key)"))
		case f.role == "":
			return withExit(2, errors.New("certs issue: --role is required (coordinator, trainer or operator)"))
		case f.out == "":
			return withExit(2, errors.New("certs issue: --out DIR2 is required (a new or empty directory for the role's certificate)"))
		}
		role, err := tlsauth.ParseRole(f.role)
		if err != nil {
			return withExit(2, fmt.Errorf("certs issue: --role %q: want coordinator, trainer or operator", f.role))
		}
		if d := f.days; d < 0 || d > maxCertDays {
			return withExit(2, fmt.Errorf("certs issue: --days %d: want 1..%d, or 0 for the CA's own expiry", d, maxCertDays))
		}
		if fi, err := os.Stat(f.certs); err != nil {
			return withExit(2, fmt.Errorf("certs issue: --certs %s: no such directory (give the directory ddpm certs init made)", f.certs))
		} else if !fi.IsDir() {
			return withExit(2, fmt.Errorf("certs issue: --certs %s: a file, not a directory (give the directory ddpm certs init made)", f.certs))
		}
		if fi, err := os.Stat(f.out); err == nil && !fi.IsDir() {
			return withExit(2, fmt.Errorf("certs issue: --out %s: a file, not a directory (give a new or empty directory)", f.out))
		}
		paths, err := tlsauth.Issue(f.certs, f.out, tlsauth.IssueOptions{Role: role, Hosts: f.hosts, Days: f.days})
		if err != nil {
			return withExit(certsExit(err), certsIssueError(f.certs, f.out, err))
		}
		return printCertsWritten(cmd.OutOrStdout(), f.out, paths)
	},
}

// certsIssueError words tlsauth.Issue's refusals as the command's lines: "certs issue: " and the
// problem without the package's prefixes ("certs issue: OUT/node.crt already exists (...)",
// "certs issue: --hosts "h:1": give a host name or IP without a port", "certs issue: missing
// file: DIR/ca.key (...)"), an --out this user may not write, and a file of --certs or --out the
// system refuses ("certs issue: --out /proc/x: cannot write there (mkdir /proc/x: no such file
// or directory)"). errors.Is still finds the package's errors.
func certsIssueError(certs, out string, err error) error {
	msg := err.Error()
	for _, e := range []error{tlsauth.ErrExists, tlsauth.ErrBadOption, tlsauth.ErrMissing, tlsauth.ErrInvalid} {
		if errors.Is(err, e) {
			msg = strings.TrimPrefix(msg, e.Error()+": ")
			if e == tlsauth.ErrMissing || e == tlsauth.ErrInvalid {
				msg = strings.TrimPrefix(e.Error(), "tlsauth: ") + ": " + msg
			}
			break
		}
	}
	var pe *fs.PathError
	switch {
	case errors.Is(err, os.ErrPermission) && errors.As(err, &pe) && !inDir(out, pe.Path):
		msg = fmt.Sprintf("--certs %s: permission denied reading %s (run as a user who may read the directory ddpm certs init made)", certs, pe.Path)
	case errors.Is(err, os.ErrPermission) && !errors.Is(err, syscall.EACCES):
		msg = fmt.Sprintf("--out %s: %s", out, osErrorWords(err)) // EPERM: see certsInitError
	case errors.Is(err, os.ErrPermission):
		msg = fmt.Sprintf("--out %s: permission denied (give a directory this user may create and write)", out)
	case errors.As(err, &pe) && inDir(out, pe.Path):
		msg = fmt.Sprintf("--out %s: cannot write there (%s %s: %v)", out, pe.Op, pe.Path, pe.Err)
	case errors.As(err, &pe):
		msg = fmt.Sprintf("--certs %s: cannot read it (%s %s: %v)", certs, pe.Op, pe.Path, pe.Err)
	case strings.HasPrefix(msg, "host "):
		msg = "--hosts " + strings.TrimPrefix(msg, "host ")
	}
	return rewordedError{msg: "certs issue: " + msg, err: err}
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

// certRoleFor refuses, before anything starts, a --certs DIR whose certificate's role cannot do
// the work of process ("coordinator", "trainer"): its peers would refuse it one call at a time
// (raft links, the all-reduce ring, checkpoint transfer). want is the role that can (want's own
// and a certificate without a role pass). The refusal is one line, exit status 2:
// "coordinator: --certs DIR holds a certificate of role trainer; a coordinator takes one of role
// coordinator (ddpm certs issue --role coordinator) or the role-less one of ddpm certs init".
// A plain-text Bundle (--insecure) has no role and passes.
func certRoleFor(b *tlsauth.Bundle, process string, want tlsauth.Role, dir string) error {
	if r := b.Role(); r == tlsauth.RoleNone || r == want {
		return nil
	}
	return withExit(2, fmt.Errorf("%s: --certs %s holds a certificate of role %s; a %s takes one of role %s (ddpm certs issue --role %s) or the role-less one of ddpm certs init",
		process, dir, b.Role(), process, want, want))
}
