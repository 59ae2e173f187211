package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"ddpm/coordinator/fsm"
	"ddpm/internal/tlsauth"
	"ddpm/internal/viz"
)

// lossCmd prints or saves the cluster's loss history.
var lossCmd = &cobra.Command{
	Use:   "loss (RUN | --coordinator ADDR (--certs DIR | --insecure)) [--follow] [--png out.png] [--csv out.csv]",
	Short: "Print, follow or save the cluster's loss curve",
	Long: `Read the coordinator's down-sampled loss history (global L_simple per reported step; merged
points hold means over the steps they cover, with the extremes in min/max) and print it as a
table, or write it with --csv (step,loss,lr,grad_norm, the columns of ddpm local's loss.csv) and
--png (a plot like ddpm local's loss.png). The coordinators keep at most 1024 points: in a longer
run, neighbouring points are merged pairwise, and a CSV row then stands for the mean over the
steps it covers, ending at its step (the table's REPORTS column says how many; ddpm local's own
loss.csv keeps every step). --follow keeps polling every --every until the run ends (exit
status 0) or the command is interrupted (Ctrl-C: exit status 130, as tail -f; the run goes on):
new points are printed as they arrive, or, with --csv/--png, the files rewritten; coordinators that stop answering (restarting, a leader failover) are waited for until
none has answered for --timeout.

The table's Q0..Q3 columns are the loss by timestep quartile: the mean L_simple of the samples
whose t lies in [0,T/4), [T/4,T/2), [T/2,3T/4) or [3T/4,T) ("-": no sample there). REPORTS is
how many reported steps a merged point covers. Before the first report the table says "no loss
reported yet".

SKIPPED counts the steps among them that the trainers skipped for a non-finite gradient (no
parameter update; ddpm local's loss.csv has such a step's row with grad_norm NaN). A skipped
step has no loss: LOSS, MIN, MAX, the quartiles, GRAD NORM and IMAGES/S (the cluster's
throughput) are over the point's other steps, "-" when it has none. In the --csv file such a point's row has loss and grad_norm NaN, as in
ddpm local's loss.csv; a merged row is the mean over its trained steps only (the table's
SKIPPED column says how many it left out).

For a ddpm local run, give its folder RUN instead of --coordinator and --certs: the
coordinators' addresses are read from RUN/local.json and the certificates from RUN/certs. Of a
run that is not going it says so, exit status 1, and names RUN/loss.csv, where ddpm local kept
every step's loss. An address that answers but is no coordinator's gRPC port (its --raft-addr
or --http-addr, a trainer's port) is named at once, in one line saying what answers there, exit
status 2.`,
	Args: cobra.MaximumNArgs(1),
	RunE: runLoss,
}

var lossFlags struct {
	coordinator, png, csv string
	force                 bool
	follow                bool
	every, timeout        time.Duration
	sec                   *tlsauth.Config
}

func init() {
	f := lossCmd.Flags()
	f.StringVar(&lossFlags.coordinator, "coordinator", "", "coordinator gRPC address(es), comma-separated (host:port)")
	f.BoolVar(&lossFlags.follow, "follow", false, "keep polling and print or write new points until the run ends")
	f.StringVar(&lossFlags.png, "png", "", "write the loss plot to this PNG file")
	f.StringVar(&lossFlags.csv, "csv", "", "write the loss history to this CSV file")
	f.BoolVar(&lossFlags.force, "force", false, "replace --png/--csv files that already exist")
	f.DurationVar(&lossFlags.every, "every", 2*time.Second, "polling period with --follow")
	f.DurationVar(&lossFlags.timeout, "timeout", 10*time.Second, "give up when no replica answers within this time (with --follow: for this long since the last answer)")
	lossFlags.sec = tlsauth.AddFlags(f)
	rootCmd.AddCommand(lossCmd)
}

func runLoss(cmd *cobra.Command, args []string) error {
	if err := runFolderFlags(cmd, "loss", args); err != nil {
		return err
	}
	addrs, err := coordinatorAddrs("loss", lossFlags.coordinator)
	if err != nil {
		return err
	}
	outs := []outFile{{"--png", lossFlags.png}, {"--csv", lossFlags.csv}}
	// What no --force lets through (a run's input, a directory) first, then the names, then an
	// existing file: "already exists (give --force ...)" is no advice for a name --force refuses.
	if err := checkOutputs(true, outs); err != nil {
		return withExit(2, fmt.Errorf("loss: %w", err))
	}
	if err := checkPNGNames(outFile{"--png", lossFlags.png}); err != nil {
		return withExit(2, fmt.Errorf("loss: %w", err))
	}
	if err := checkOutNames(".csv", "the loss history is written as CSV", outFile{"--csv", lossFlags.csv}); err != nil {
		return withExit(2, fmt.Errorf("loss: %w", err))
	}
	if err := checkOutputs(lossFlags.force, outs); err != nil {
		return withExit(2, fmt.Errorf("loss: %w", err))
	}
	if lossFlags.timeout <= 0 {
		return withExit(2, fmt.Errorf("loss: --timeout must be positive, got %v", lossFlags.timeout))
	}
	if lossFlags.every <= 0 {
		return withExit(2, fmt.Errorf("loss: --every must be positive, got %v", lossFlags.every))
	}
	if cmd.Flags().Changed("every") && !lossFlags.follow {
		return withExit(2, fmt.Errorf("loss: --every %v is the polling period of --follow; without --follow the history is read once", lossFlags.every))
	}
	sec, err := monitorSecurity(cmd, lossFlags.sec)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := cmd.OutOrStdout()
	table := lossFlags.png == "" && lossFlags.csv == ""
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	if table {
		fmt.Fprintln(tw, "STEP\tLOSS\tMIN\tMAX\tQ0\tQ1\tQ2\tQ3\tGRAD NORM\tLR\tIMAGES/S\tREPORTS\tSKIPPED")
	}
	var last int64 = -1
	var lastN int
	announced := false
	var lastAnswer time.Time // of the last state read, with --follow
	outage := false
	for {
		_, st, err := fetchState(ctx, "loss", addrs, sec, lossFlags.sec.Dir, lossFlags.timeout)
		if err != nil {
			if ctx.Err() != nil {
				return lossInterrupted(last)
			}
			// Following, the coordinators may be restarting (a replica killed and brought back, a
			// leader failover): keep asking until none has answered for --timeout.
			if !lossFlags.follow || lastAnswer.IsZero() || time.Since(lastAnswer) >= lossFlags.timeout {
				// Of a ddpm local run folder, at the start or after following it: the run is not
				// running, and where its history is (not the --coordinator line, for a flag the
				// command line did not give).
				return stoppedRunFolder(ctx, "loss", args, addrs, err)
			}
			if !outage {
				outage = true
				fmt.Fprintf(cmd.ErrOrStderr(), "ddpm: loss: no coordinator answers; following on until none has for --timeout %v\n", lossFlags.timeout)
			}
			select {
			case <-ctx.Done():
				return lossInterrupted(last)
			case <-time.After(lossFlags.every):
			}
			continue
		}
		lastAnswer, outage = time.Now(), false
		pts := st.Loss.Points
		if table && len(pts) == 0 && last < 0 && !announced {
			// Only the header so far: say why, once (with --follow the rows follow).
			announced = true
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(out, "no loss reported yet")
		}
		if table {
			for _, p := range pts {
				if p.Step > last {
					writeLossRow(tw, p)
				}
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		} else if len(pts) != lastN || (len(pts) > 0 && pts[len(pts)-1].Step != last) {
			if err := writeLossFiles(pts, st); err != nil {
				return err
			}
			if lossFlags.follow {
				fmt.Fprintf(out, "%d points up to step %d written\n", len(pts), lastStep(pts))
			}
		}
		if len(pts) > 0 {
			last = pts[len(pts)-1].Step
		}
		lastN = len(pts)
		if !lossFlags.follow || st.Status.Terminal() {
			if lossFlags.follow {
				fmt.Fprintf(out, "run %s\n", st.Status)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return lossInterrupted(last)
		case <-time.After(lossFlags.every):
		}
	}
}

// lossInterrupted is the exit-130 line of ddpm loss stopped by SIGINT or SIGTERM (Ctrl-C of
// --follow), as every other ddpm command and tail -f: the status tells a script that the
// following was cut short from a run that ended (0, after "run succeeded"). last is the newest
// step printed or written, -1 for none. It exited 0 without a word.
func lossInterrupted(last int64) error {
	at := "before any loss point"
	if last >= 0 {
		at = fmt.Sprintf("after step %d", last)
	}
	return withExit(exitInterrupted, fmt.Errorf("loss: interrupted %s; the run goes on", at))
}

func lastStep(pts []fsm.LossPoint) int64 {
	if len(pts) == 0 {
		return 0
	}
	return pts[len(pts)-1].Step
}

func writeLossRow(w io.Writer, p fsm.LossPoint) {
	var q [4]string
	for i, v := range p.LossQuartiles {
		q[i] = "-" // no sample in that quartile of [0, T)
		if p.HasQuartile(i) {
			q[i] = fmt.Sprintf("%.4g", v)
		}
	}
	// Only skipped steps: no loss, no gradient norm, no throughput (no image was trained).
	loss, lo, hi, grad, ips := "-", "-", "-", "-", "-"
	if p.HasLoss() {
		loss, lo, hi = fmt.Sprintf("%.6g", p.Loss), fmt.Sprintf("%.6g", p.LossMin), fmt.Sprintf("%.6g", p.LossMax)
		grad = fmt.Sprintf("%.4g", p.GradNorm)
		// Over the trained steps only: a skipped step's 0 would read as a slow cluster.
		ips = fmt.Sprintf("%.1f", p.TrainedImagesPerSec())
	}
	fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.3g\t%s\t%d\t%d\n", p.Step, loss, lo, hi,
		q[0], q[1], q[2], q[3], grad, p.LR, ips, p.Count, p.Skipped)
}

// writeLossFiles writes --csv and --png through internal/viz (the files ddpm local writes).
func writeLossFiles(pts []fsm.LossPoint, st *fsm.State) error {
	vp := make([]viz.LossPoint, len(pts))
	for i, p := range pts {
		vp[i] = viz.LossPoint{Step: p.Step, Loss: p.Loss, LR: p.LR, GradNorm: p.GradNorm}
		if !p.HasLoss() {
			// Only skipped steps: ddpm local's loss.csv marks such a step with grad_norm NaN;
			// its loss is none either (the plot leaves the point out).
			vp[i].Loss, vp[i].GradNorm = math.NaN(), math.NaN()
		}
	}
	if lossFlags.csv != "" {
		if err := viz.WriteLossCSV(lossFlags.csv, vp); err != nil {
			return withExit(1, fmt.Errorf("loss: --csv: %w", err))
		}
	}
	if lossFlags.png != "" {
		title := "ddpm loss"
		if st.Run != nil {
			title = fmt.Sprintf("ddpm %s (%s), global batch %d", monOrNone(st.Run.Preset), st.Run.Model, st.Run.GlobalBatch)
		}
		if err := viz.WriteLossPNG(lossFlags.png, vp, title); err != nil {
			return withExit(1, fmt.Errorf("loss: --png: %w", err))
		}
	}
	return nil
}
