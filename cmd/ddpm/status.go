package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"ddpm/api"
	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/localrun"
	"ddpm/internal/tlsauth"
	"ddpm/trainer"
)

// statusCmd prints the cluster's state as tables.
var statusCmd = &cobra.Command{
	Use:   "status (RUN | --coordinator ADDR (--certs DIR | --insecure))",
	Short: "Show the run, its members, generation and committed checkpoints",
	Long: `Ask any coordinator replica (its gRPC address; several may be given, comma-separated) for the
replicated state and print it as tables: the run, the answering replica, the current generation,
the members and the committed checkpoints. For a ddpm local run, give its folder RUN instead:
the coordinators' addresses are read from RUN/local.json and the certificates from RUN/certs;
of a run that is not going it says so (and whether it finished) and where its checkpoints are
listed, with exit status 1.

Exit status 1 when no replica answers: within about a second when none of the addresses can
answer (every connection refused: coordinator down, or not its --grpc-addr; or a host name that
does not resolve), after --timeout
when one accepts connections but does not answer (a host that drops packets, a replica stuck).
A replica answers without a raft leader; its tables then show leader "-". Exit status 2 for bad
flags, and at once for --certs of another cluster (another CA: the coordinator's certificate
and ours refuse each other) and for an address that answers but is no coordinator's gRPC port
(its --raft-addr or --http-addr, a trainer's port: the line names what answers there).`,
	Args: cobra.MaximumNArgs(1),
	RunE: runStatus,
}

var statusFlags struct {
	coordinator string
	timeout     time.Duration
	sec         *tlsauth.Config
}

func init() {
	f := statusCmd.Flags()
	f.StringVar(&statusFlags.coordinator, "coordinator", "", "coordinator gRPC address(es), comma-separated (host:port)")
	f.DurationVar(&statusFlags.timeout, "timeout", 10*time.Second, "give up when no replica answers within this time")
	statusFlags.sec = tlsauth.AddFlags(f)
	rootCmd.AddCommand(statusCmd)
}

// coordinatorAddrs splits the --coordinator flag; it returns a usage error (exit 2) when it is
// empty or an address is not host:port, at once rather than after --timeout of dialing.
func coordinatorAddrs(cmd, flag string) ([]string, error) {
	var addrs []string
	for _, a := range strings.Split(flag, ",") {
		if a = strings.TrimSpace(a); a != "" {
			if err := checkHostPort(a); err != nil {
				return nil, withExit(2, fmt.Errorf("%s: --coordinator %s: %v", cmd, a, err))
			}
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, withExit(2, fmt.Errorf("%s: --coordinator ADDR is required (a coordinator's gRPC host:port)", cmd))
	}
	return addrs, nil
}

// runFolderFlags gives the monitoring command cmd (name: status, loss) the --coordinator and
// --certs of the ddpm local run folder args[0], when one was given: the addresses of its
// coordinators and its certificate directory, as runFolderCluster reads them from RUN/local.json,
// exactly as if they had been given on the command line. Exit status 2, in one line, for a
// folder given with --coordinator, --certs or --insecure, and for a path that is no run folder
// (naming what it is instead):
//
//	status: give the run folder runs/a or --coordinator, not both (runs/a/local.json names its coordinators, runs/a/certs holds its certificates)
//	status: runs/a/trainer-0 is a trainer's folder (checkpoints.db), not a ddpm local run folder (no local.json): give the run folder, or --coordinator ADDR --certs DIR
func runFolderFlags(cmd *cobra.Command, name string, args []string) error {
	if len(args) == 0 {
		return nil
	}
	dir := args[0]
	f := cmd.Flags()
	for _, fl := range []string{"coordinator", "certs", "insecure"} {
		if f.Changed(fl) {
			return withExit(exitUsage, fmt.Errorf("%s: give the run folder %s or --%s, not both (%s names its coordinators, %s holds its certificates)",
				name, dir, fl, filepath.Join(dir, localrun.ManifestFile), filepath.Join(dir, localrun.CertsDir)))
		}
	}
	addrs, certs, err := runFolderCluster(dir)
	if err != nil {
		what := "not a ddpm local run folder (no " + localrun.ManifestFile + ")"
		st, serr := os.Stat(dir)
		switch kind := localrun.FolderKind(dir); {
		case serr != nil:
			what = "not a ddpm local run folder (no such file or folder)"
		case kind == localrun.KindRunFolder:
			// trainer-0/checkpoints.db but no readable local.json: the addresses are lost.
			return withExit(exitUsage, fmt.Errorf("%s: %s: %v; give --coordinator ADDR --certs %s", name, dir, err, filepath.Join(dir, localrun.CertsDir)))
		case kind != "":
			what = kind + ", not a ddpm local run folder (no " + localrun.ManifestFile + ")"
		case !st.IsDir():
			what = "a file, not a ddpm local run folder"
		}
		return withExit(exitUsage, fmt.Errorf("%s: %s is %s: give the run folder, or --coordinator ADDR --certs DIR", name, dir, what))
	}
	if err := f.Set("coordinator", strings.Join(addrs, ",")); err != nil {
		return withExit(exitUsage, err)
	}
	if err := f.Set("certs", certs); err != nil {
		return withExit(exitUsage, err)
	}
	// Given too, so that a DDPM_INSECURE of the environment (flagsFromEnv reads it for a flag the
	// command line left unset) does not meet the run's certificates: the run folder on the
	// command line decides, as a flag would. It was "--insecure and --certs RUN/certs exclude
	// each other", two flags the user had not given.
	if err := f.Set("insecure", "false"); err != nil {
		return withExit(exitUsage, err)
	}
	return nil
}

// checkHostPort says what is wrong with an address that is not host:port with a port in
// 1..65535 (an IPv6 host in brackets: [::1]:7000; an empty host is this machine).
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("not a host:port address (%s)", strings.TrimPrefix(err.Error(), "address "+addr+": "))
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("host %q is not a host name or IP address", host)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q is not a number in 1..65535", port)
	}
	return nil
}

// monitorSecurity reads DDPM_<FLAG> for the flags the command line left unset (DDPM_CERTS,
// DDPM_INSECURE, ...) and loads the --certs/--insecure choice of a monitoring command.
func monitorSecurity(cmd *cobra.Command, cfg *tlsauth.Config) (*tlsauth.Bundle, error) {
	if err := flagsFromEnv(cmd.Flags()); err != nil {
		return nil, withExit(2, err)
	}
	b, err := loadSecurity(cfg, nil)
	return b, clientCertsHint(cmd, cfg, err)
}

// clientCertsHint turns tlsauth's "choose TLS (--certs DIR) or plain text (--insecure): no
// certificate directory given (make one with `ddpm certs init DIR`)" of a command that dials a
// running cluster (status, loss, checkpoint rollback and fetch) into advice that fits it: a
// client needs the certificates the cluster was started with, not new ones, and a ddpm local
// run keeps them in RUN/certs. Exit status 2; other errors (both flags given) pass through.
func clientCertsHint(cmd *cobra.Command, cfg *tlsauth.Config, err error) error {
	if !errors.Is(err, tlsauth.ErrNoMode) || cfg.Dir != "" || cfg.Insecure {
		return err
	}
	name := strings.TrimPrefix(cmd.CommandPath(), rootCmd.Name()+" ")
	return withExit(exitUsage, fmt.Errorf("%s: --certs DIR is required: the certificates the cluster was started with (a ddpm local run's are in RUN/certs, as its first lines say); --insecure only for a cluster started with --insecure", name))
}

// refusedAfter is how long fetchState asks before it checks whether anything listens at the
// coordinator addresses at all: a coordinator starting up binds its port within it.
const refusedAfter = time.Second

// fetchState asks the coordinators at addrs, over links secured by sec, for the replicated
// state within timeout. A refusal by TLS or the join secret names its cause: a certificate of
// another CA than that of --certs certs (either side refusing the other's) ends it at the first
// failed handshake, in one line starting "name: " (otherCAError, exit 2). When no replica
// has answered after refusedAfter and no address can answer at all (every one refuses TCP
// connections, or its host name does not resolve), it returns at once (exit 1) saying so,
// rather than retrying for the rest of timeout. (A trainer keeps waiting on such names: in
// Kubernetes a headless service's names resolve only once its pods exist. A command run by
// hand has been given a wrong name or a coordinator that is not running.)
func fetchState(ctx context.Context, name string, addrs []string, sec *tlsauth.Bundle, certs string, timeout time.Duration) (*api.StatusResponse, *fsm.State, error) {
	resp, st, _, err := fetchStateStore(ctx, name, addrs, sec, certs, timeout)
	return resp, st, err
}

// fetchStateStore is fetchState with the answering replica's store failure
// (coordinator.Client.StatusStore: "" while its raft log takes writes).
func fetchStateStore(ctx context.Context, name string, addrs []string, sec *tlsauth.Bundle, certs string, timeout time.Duration) (*api.StatusResponse, *fsm.State, string, error) {
	cli, err := coordinator.Dial(addrs, sec, coordinator.WithAttemptTimeout(min(timeout, 2*time.Second)), coordinator.WithCertRefusalFinal())
	if err != nil {
		return nil, nil, "", withExit(2, err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	first, cancelFirst := context.WithTimeout(ctx, refusedAfter)
	resp, failing, err := cli.StatusStore(first)
	cancelFirst()
	if errors.Is(err, coordinator.ErrUnavailable) && !errors.Is(ctx.Err(), context.Canceled) {
		// Not ctx: with --timeout under refusedAfter it has ended, and the probe has its own.
		if why := unreachable(context.WithoutCancel(ctx), addrs); why != "" {
			return nil, nil, "", withExit(1, errors.New(why))
		}
		if ctx.Err() == nil {
			resp, failing, err = cli.StatusStore(ctx)
		}
	}
	var refused *coordinator.CertRefusedError
	if errors.As(err, &refused) {
		return nil, nil, "", otherCAError(name, "the coordinator at "+refused.Addr, certs)
	}
	var wrong *coordinator.NotCoordinatorError
	if errors.As(err, &wrong) {
		// Every address answers, and none is a coordinator's gRPC port (a raft or HTTP port, a
		// trainer's): a command line to change, said at the first contact.
		return nil, nil, "", withExit(exitUsage, &advisedError{err: wrong, msg: name + ": " + wrong.Msg})
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, coordinator.ErrUnavailable) {
			if h := coordinator.Hint(err); h != "" {
				return nil, nil, "", withExit(1, fmt.Errorf("no coordinator answered at %s within %v: %s (%v)", strings.Join(addrs, ","), timeout, h, err))
			}
			return nil, nil, "", withExit(1, fmt.Errorf("no coordinator answered at %s within %v (%v)", strings.Join(addrs, ","), timeout, err))
		}
		return nil, nil, "", withExit(1, err)
	}
	st, err := fsm.Decode(resp.StateJson)
	if err != nil {
		return nil, nil, "", withExit(1, err)
	}
	return resp, st, failing, nil
}

// otherCAError is the line of command name ("status", "checkpoint fetch") whose TLS handshake
// with who ("the coordinator at ADDR", "the trainer at ADDR") failed because one side's
// certificate is not from the other's CA: --certs certs of another cluster. Exit status 2.
func otherCAError(name, who, certs string) error {
	return withExit(exitUsage, fmt.Errorf("%s: %s and --certs %s are of different CAs (the certificates of another run?): give --certs the directory of its cluster's certificates (a ddpm local run's RUN/certs)", name, who, certs))
}

// unreachable tries a TCP connection to every one of addrs (a connection that is made is
// closed at once, unused). When none can answer, because each refuses the connection (nothing
// listens there) or names a host the resolver says does not exist, it returns the line that says
// so; it returns "" when any address accepts a connection or fails otherwise (a timeout: a host
// that drops packets, a slow resolver), since a coordinator may yet answer there:
//
//	nothing listens at 127.0.0.1:7001 (connection refused): no coordinator runs there, or not yet (--coordinator takes a coordinator's --grpc-addr)
//	no coordinator at no-such-host.invalid:7001 (no such host): --coordinator takes a coordinator's --grpc-addr, host:port
func unreachable(ctx context.Context, addrs []string) string {
	why, refused := deadAddrs(ctx, addrs)
	switch {
	case why == nil:
		return ""
	case refused:
		return fmt.Sprintf("nothing listens at %s (connection refused): no coordinator runs there, or not yet (--coordinator takes a coordinator's --grpc-addr)",
			strings.Join(addrs, ","))
	}
	return fmt.Sprintf("no coordinator at %s: --coordinator takes a coordinator's --grpc-addr, host:port", strings.Join(why, ", "))
}

// deadAddrs tries a TCP connection to every one of addrs (closing at once one that is made). When
// every one is refused or names a host the resolver does not know, why holds "ADDR (connection
// refused)" or "ADDR (no such host)" for each, and refused reports that all were refused; why is
// nil when any accepts or fails otherwise (a timeout).
func deadAddrs(ctx context.Context, addrs []string) (why []string, refused bool) {
	d := net.Dialer{Timeout: refusedAfter / 2}
	refused = true
	for _, a := range addrs {
		conn, err := d.DialContext(ctx, "tcp", a)
		if err == nil {
			conn.Close()
		}
		var dns *net.DNSError
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			why = append(why, a+" (connection refused)")
		case errors.As(err, &dns) && dns.IsNotFound:
			why = append(why, a+" (no such host)")
			refused = false
		default:
			return nil, false
		}
	}
	return why, refused
}

// stoppedRunFolder rewords err, the failure of command name (status, loss) to reach the
// coordinators addrs that the ddpm local run folder args[0] names, when that run is not going:
// no process holds its local.lock and nothing listens at any of its coordinators' ports (every
// connection refused). The line says so (and that it finished, when a trainer holds the
// committed checkpoint of its last step), where its checkpoints (for loss, its loss history,
// RUN/loss.csv, every step) are read instead, and how to start an unfinished one again; exit status 1,
// as for any cluster that does not answer. It was "nothing listens at ADDRS: no coordinator
// runs there, or not yet (--coordinator takes a coordinator's --grpc-addr)", naming a flag the
// command line did not give. Any other err (no folder given, a run still going, a port that
// takes connections) is returned as it is.
//
//	status: the ddpm local run runs/a is not running (nothing listens at its coordinators 127.0.0.1:40001,127.0.0.1:40004): ddpm checkpoint list runs/a lists its checkpoints; ddpm local --resume runs/a starts it again
//	loss: the ddpm local run runs/a finished at step 200 and is not running (nothing listens at its coordinators 127.0.0.1:40001): its loss history is in runs/a/loss.csv
//
// A recorded port that another program now serves (the Client's NotCoordinatorError) is named
// with its holder, which `ddpm local --resume` needs gone (exit 1, not the --coordinator line):
//
//	status: the ddpm local run runs/a is not running: another program now answers at its coordinator's port 127.0.0.1:40001 (pid 77 (python3 -m http.server 40001)), which ddpm local --resume runs/a needs free; ddpm checkpoint list runs/a lists its checkpoints
func stoppedRunFolder(ctx context.Context, name string, args, addrs []string, err error) error {
	if err == nil || len(args) != 1 || ctx.Err() != nil {
		return err
	}
	dir := args[0]
	if localrun.Running(dir) != nil {
		return err
	}
	// A port the stopped run recorded that another program now serves (the Client named it as
	// no coordinator's gRPC port): not a --coordinator to change, which was not given.
	var wrong *coordinator.NotCoordinatorError
	held := ""
	if errors.As(err, &wrong) {
		held = "another program now answers at its coordinator's port " + wrong.Addr
		if _, port, serr := net.SplitHostPort(wrong.Addr); serr == nil {
			if p, perr := strconv.Atoi(port); perr == nil {
				if h, ok := localrun.FindPortHolder(p); ok {
					held += " (" + h.HeldBy() + ")"
				}
			}
		}
		held += ", which ddpm local --resume " + shellWord(dir) + " needs free"
	} else if why, refused := deadAddrs(ctx, addrs); why == nil || !refused {
		return err
	}
	see := fmt.Sprintf("ddpm checkpoint list %s lists its checkpoints", shellWord(dir))
	if name == "loss" {
		csv := filepath.Join(dir, localrun.LossCSV)
		see = "it has no loss history yet (no " + csv + ")"
		if _, serr := os.Stat(csv); serr == nil {
			see = "its loss history is in " + csv
		}
	}
	state, next := "is not running", "; ddpm local --resume "+shellWord(dir)+" starts it again"
	if steps, ok := runFolderSteps(dir); ok && runFolderFinished(dir, steps) {
		state, next = fmt.Sprintf("finished at step %d and is not running", steps), ""
	}
	if held != "" {
		return withExit(1, fmt.Errorf("%s: the ddpm local run %s %s: %s; %s", name, dir, state, held, see))
	}
	return withExit(1, fmt.Errorf("%s: the ddpm local run %s %s (nothing listens at its coordinators %s): %s%s",
		name, dir, state, strings.Join(addrs, ","), see, next))
}

// runFolderSteps is the steps of the ddpm local run in dir, from RUN/run.yaml or (that one
// gone) a trainer's copy beside its checkpoints; ok is false when none loads.
func runFolderSteps(dir string) (steps int64, ok bool) {
	for _, yaml := range []string{filepath.Join(dir, localrun.ConfigFile), filepath.Join(localrun.TrainerDir(dir, 0), trainer.ConfigFile), filepath.Join(localrun.TrainerDir(dir, 1), trainer.ConfigFile)} {
		if run, err := config.Load(yaml); err == nil {
			return run.Steps, true
		}
	}
	return 0, false
}

// runFolderFinished reports whether a trainer of the stopped ddpm local run in dir holds the
// committed checkpoint of the run's last step, steps: the coordinators commit it only when
// every rank reported it, so the run finished. A file that cannot be read counts as no.
func runFolderFinished(dir string, steps int64) bool {
	m, err := localrun.ReadManifest(dir)
	if err != nil {
		return false
	}
	for i := range m.Trainers {
		st, err := checkpoint.Open(filepath.Join(localrun.TrainerDir(dir, i), trainer.CheckpointFile), checkpoint.Options{ReadOnly: true, LockTimeout: 100 * time.Millisecond})
		if err != nil {
			continue
		}
		committed, err := st.Committed()
		st.Close()
		if err == nil && slices.Contains(committed, steps) {
			return true
		}
	}
	return false
}

func runStatus(cmd *cobra.Command, args []string) error {
	if err := runFolderFlags(cmd, "status", args); err != nil {
		return err
	}
	addrs, err := coordinatorAddrs("status", statusFlags.coordinator)
	if err != nil {
		return err
	}
	if statusFlags.timeout <= 0 {
		return withExit(2, fmt.Errorf("status: --timeout must be positive, got %v", statusFlags.timeout))
	}
	sec, err := monitorSecurity(cmd, statusFlags.sec)
	if err != nil {
		return err
	}
	resp, st, failing, err := fetchStateStore(cmd.Context(), "status", addrs, sec, statusFlags.sec.Dir, statusFlags.timeout)
	if err != nil {
		return stoppedRunFolder(cmd.Context(), "status", args, addrs, err)
	}
	resp, st, note := leaderState(cmd.Context(), resp, st, failing, sec, statusFlags.timeout)
	if note != "" {
		fmt.Fprintln(cmd.OutOrStdout(), note)
	}
	return writeStatus(cmd.OutOrStdout(), resp, st, secFlags(statusFlags.sec))
}

// statusLagEntries is how many raft entries a follower may have applied fewer than its leader
// before `ddpm status` says so: heartbeats are entries, so a healthy follower trails by a few.
const statusLagEntries = 100

// leaderProbe bounds the TCP connection leaderState tries before it asks a follower's leader.
const leaderProbe = 500 * time.Millisecond

// leaderState checks the answer of a follower against its leader's (asked at the leader's gRPC
// address within timeout): when the follower has applied more than statusLagEntries entries
// fewer, it returns the leader's answer and the note saying so: that the replica cannot store
// raft log entries when it said so (failing: its store failure, from fetchStateStore), else that
// it is catching up (after a restart, or cut off for a while); otherwise (the leader itself answered, no leader known,
// the leader not answering) the answer it was given and "". A leader address that takes no TCP
// connection within leaderProbe (a leader just gone that the follower still names, a cluster
// name that does not resolve where the command runs, such as through kubectl port-forward) is not
// asked at all: gRPC would retry it for seconds.
func leaderState(ctx context.Context, resp *api.StatusResponse, st *fsm.State, failing string, sec *tlsauth.Bundle, timeout time.Duration) (*api.StatusResponse, *fsm.State, string) {
	if resp.LeaderId == "" || resp.LeaderId == resp.ReplicaId || resp.LeaderGrpcAddress == "" {
		return resp, st, ""
	}
	d := net.Dialer{Timeout: min(timeout, leaderProbe)}
	conn, err := d.DialContext(ctx, "tcp", resp.LeaderGrpcAddress)
	if err != nil {
		return resp, st, ""
	}
	conn.Close()
	cli, err := coordinator.Dial([]string{resp.LeaderGrpcAddress}, sec, coordinator.WithAttemptTimeout(min(timeout, 2*time.Second)))
	if err != nil {
		return resp, st, ""
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, min(timeout, 3*time.Second))
	defer cancel()
	lr, err := cli.Status(ctx)
	if err != nil || lr.ReplicaId != resp.LeaderId || lr.AppliedIndex <= resp.AppliedIndex+statusLagEntries {
		return resp, st, ""
	}
	lst, err := fsm.Decode(lr.StateJson)
	if err != nil {
		return resp, st, ""
	}
	if failing != "" {
		return lr, lst, fmt.Sprintf("note: replica %s lags its leader (applied index %d, the leader's %d) and cannot store raft log entries (%s; free space on its disk, see its log): the state below is the leader %s's",
			resp.ReplicaId, resp.AppliedIndex, lr.AppliedIndex, failing, lr.ReplicaId)
	}
	return lr, lst, fmt.Sprintf("note: replica %s is catching up with its leader (applied index %d, the leader's %d; normal after a restart): the state below is the leader %s's",
		resp.ReplicaId, resp.AppliedIndex, lr.AppliedIndex, lr.ReplicaId)
}

// secFlags is the --certs DIR or --insecure of a monitoring command's security choice (after
// DDPM_CERTS and DDPM_INSECURE were read), as a command line it prints would repeat it.
func secFlags(cfg *tlsauth.Config) string {
	switch {
	case cfg.Insecure:
		return "--insecure"
	case cfg.Dir != "":
		return "--certs " + cfg.Dir
	}
	return ""
}

// monStamp formats a Unix-ns time of the state in UTC ("-" for zero).
func monStamp(ns int64) string {
	if ns == 0 {
		return "-"
	}
	return time.Unix(0, ns).UTC().Format("2006-01-02 15:04:05Z")
}

// writeStatus prints the tables of `ddpm status`; sec (--certs DIR, --insecure, or "") ends the
// rollback command it suggests, so that it runs as printed.
func writeStatus(out io.Writer, resp *api.StatusResponse, st *fsm.State, sec string) error {
	w := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	status := string(st.Status)
	switch {
	case status == "" && resp.LeaderId == "":
		status = "not known: no leader has submitted a run config" // a replica's --config waits for one
	case status == "":
		status = "no run configured"
	}
	fmt.Fprintf(w, "RUN\t%s", status)
	if st.Reason != "" {
		fmt.Fprintf(w, ": %s", st.Reason)
	}
	fmt.Fprintln(w)
	switch {
	case resp.LeaderId == "" && len(resp.Replicas) > 1:
		// Nothing is decided without a leader: no run config is submitted, no trainer joins.
		fmt.Fprintf(w, "leader\tnone known to replica %s: a majority of the %d replicas must be up and reach each other's raft ports (same --peers everywhere); start the others\n",
			resp.ReplicaId, len(resp.Replicas))
	case resp.LeaderId == "":
		fmt.Fprintf(w, "leader\tnone known to replica %s yet: a one-replica cluster elects itself within seconds; ask again, and if it stays, read its log\n",
			resp.ReplicaId)
	}
	if cp := st.HolderWait(); cp != nil {
		// No generation can start: say what the run waits for and the way out.
		fmt.Fprintf(w, "waiting\tfor a holder of checkpoint %d (%s) to rejoin; if none can: %s\n",
			cp.Step, strings.Join(cp.Holders, " "), strings.TrimSpace(fmt.Sprintf("ddpm checkpoint rollback --coordinator %s --to-step %d %s",
				monOrNone(strings.Join(resp.Replicas, ",")), st.RollbackTarget(), sec)))
	}
	if wait := st.TrainerWait(); wait != "" {
		// No generation runs until enough trainers are members (a dropped trainer's run too).
		fmt.Fprintf(w, "waiting\t%s; start the missing trainers\n", wait)
	}
	if st.Run != nil {
		pct := 0.0
		if st.TotalSteps > 0 {
			pct = 100 * float64(st.Step) / float64(st.TotalSteps)
		}
		fmt.Fprintf(w, "step\t%d / %d (%.1f%%)", st.Step, st.TotalSteps, pct)
		// Between a broken generation and the next one's first report, the run stands at the
		// checkpoint it restarts from while the loss history still ends further on.
		if n := len(st.Loss.Points); n > 0 && st.Loss.Points[n-1].Step > st.Step && !st.Status.Terminal() {
			fmt.Fprintf(w, ": restarting from the last committed checkpoint (steps %d-%d are recomputed)", st.Step+1, st.Loss.Points[n-1].Step)
		}
		fmt.Fprintln(w)
		if st.Status == fsm.StatusFailed {
			// A failed run stays failed until an operator revives it from a committed checkpoint.
			to := int64(0)
			if cp := st.LatestCheckpoint(); cp != nil {
				to = cp.Step
			}
			fmt.Fprintf(w, "revive\t%s, then start the trainers that stopped\n", strings.TrimSpace(fmt.Sprintf("ddpm checkpoint rollback --coordinator %s --to-step %d --yes %s",
				monOrNone(strings.Join(resp.Replicas, ",")), to, sec)))
		}
		fmt.Fprintf(w, "preset / model\t%s / %s\n", monOrNone(st.Run.Preset), st.Run.Model)
		fmt.Fprintf(w, "global batch\t%d\n", st.Run.GlobalBatch)
		fmt.Fprintf(w, "config\t%.12s\n", st.ConfigHash)
	}
	if n := len(st.Loss.Points); n > 0 {
		p := st.Loss.Points[n-1]
		if p.HasLoss() {
			fmt.Fprintf(w, "loss\t%.5g at step %d (lr %.3g, grad norm %.4g, %.1f images/s)\n", p.Loss, p.Step, p.LR, p.GradNorm, p.TrainedImagesPerSec())
		} else {
			fmt.Fprintf(w, "loss\tnone at step %d: skipped for a non-finite gradient (lr %.3g)\n", p.Step, p.LR)
		}
		var skipped int64
		for _, p := range st.Loss.Points {
			skipped += p.Skipped
		}
		if skipped > 0 {
			steps := "steps"
			if skipped == 1 {
				steps = "step"
			}
			fmt.Fprintf(w, "skipped\t%d %s of the loss history skipped for a non-finite gradient (ddpm loss: SKIPPED)\n", skipped, steps)
		}
	}
	fmt.Fprintf(w, "replica\t%s (leader %s, term %d, applied index %d)\n", resp.ReplicaId, monOrNone(resp.LeaderId), resp.RaftTerm, resp.AppliedIndex)
	fmt.Fprintln(w)

	g := st.Generation
	fmt.Fprintf(w, "GENERATION\t%d\n", g.Number)
	fmt.Fprintf(w, "world\t%d\n", g.World)
	fmt.Fprintf(w, "ring\t%s\n", monOrNone(strings.Join(g.Ring, " ")))
	fmt.Fprintf(w, "start step\t%d\n", g.StartStep)
	fmt.Fprintf(w, "started\t%s\n", monStamp(g.StartedAt))
	if err := w.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(w, "MEMBER\tSTATE\tRANK\tSTEP\tADDRESS\tVERSION\tLAST HEARTBEAT")
	members := make([]*fsm.Member, 0, len(st.Members))
	for _, m := range st.Members {
		members = append(members, m)
	}
	slices.SortFunc(members, func(a, b *fsm.Member) int { return strings.Compare(a.ID, b.ID) })
	for _, m := range members {
		rank := "-"
		if r := g.Rank(m.ID); r >= 0 {
			rank = fmt.Sprint(r)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", m.ID, m.State, rank, m.Step, m.Address, m.Version, monStamp(m.LastHeartbeat))
	}
	if len(members) == 0 {
		fmt.Fprintln(w, "(none)")
	}
	if err := w.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(w, "CHECKPOINT\tSHA256\tSIZE\tGENERATION\tHOLDERS\tCOMMITTED")
	for i := len(st.Checkpoints) - 1; i >= 0; i-- {
		c := st.Checkpoints[i]
		// A checkpoint adopted from a trainer's volume (the coordinators had lost their record
		// of it) has no known size or generation.
		size, gen := monBytes(c.Size), fmt.Sprint(c.Generation)
		if c.Size == 0 {
			size, gen = "-", "adopted"
		}
		fmt.Fprintf(w, "%d\t%.16s\t%s\t%s\t%s\t%s\n", c.Step, c.SHA256, size, gen, strings.Join(c.Holders, ","), monStamp(c.Time))
	}
	if len(st.Checkpoints) == 0 {
		fmt.Fprintln(w, "(none committed)")
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(st.Abandoned) == 0 {
		return nil
	}
	// Committed checkpoints an operator's rollback gave up (ddpm checkpoint rollback).
	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(w, "ABANDONED\tSHA256\tGENERATION\tHOLDERS\tROLLED BACK TO\tAT")
	for i := len(st.Abandoned) - 1; i >= 0; i-- {
		a := st.Abandoned[i]
		gen := fmt.Sprint(a.Generation)
		if a.Size == 0 {
			gen = "adopted"
		}
		fmt.Fprintf(w, "%d\t%.16s\t%s\t%s\t%d\t%s\n", a.Step, a.SHA256, gen, monOrNone(strings.Join(a.Holders, ",")), a.RolledBackTo, monStamp(a.AbandonedAt))
	}
	return w.Flush()
}

func monOrNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// monBytes prints n bytes with a binary unit.
func monBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
