package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"ddpm/checkpoint"
	"ddpm/internal/tlsauth"
	"ddpm/trainer"
)

// `ddpm checkpoint`: inspect, verify, export, compact and copy bbolt checkpoint files. Exit
// status 1 for a damaged or unreadable checkpoint, 2 for a command line that cannot be run.
var checkpointCmd = &cobra.Command{
	Use:   "checkpoint",
	Short: "Inspect, verify, export, compact and fetch checkpoint files; roll a run back to one",
	Long: `A trainer keeps its checkpoints in one bbolt file (checkpoints.db in its --data-dir). These
commands open it read-only, except compact. A file a running trainer holds cannot be opened:
the commands wait one second for its lock, then name the process that holds it (on a machine
busy training, starting the command and that answer take a few seconds in all); copy a
committed checkpoint out of the live trainer instead: ddpm checkpoint fetch TRAINER_ADDR --step N --out COPY.db.
ddpm checkpoint rollback restarts a run that waits for a lost checkpoint from an older one.`,
}

// openCheckpoint opens file (or the checkpoint file of a folder, see trainer.CheckpointFileIn)
// read-only and turns the usual failures into one clear line.
func openCheckpoint(file string) (*checkpoint.Store, error) {
	file, err := trainer.CheckpointFileIn(file)
	if err != nil {
		return nil, withExit(exitUsage, err)
	}
	if err := checkCheckpointKind("", file); err != nil {
		return nil, err
	}
	st, err := checkpoint.Open(file, checkpoint.Options{ReadOnly: true})
	switch {
	case errors.Is(err, checkpoint.ErrInUse):
		return nil, withExit(exitBadData, fmt.Errorf("%w (a running trainer? copy a committed checkpoint with: ddpm checkpoint fetch TRAINER_ADDR --step N --out COPY.db)", err))
	case errors.Is(err, os.ErrNotExist):
		return nil, withExit(exitUsage, fmt.Errorf("checkpoint file %s does not exist", file))
	case err != nil:
		return nil, withExit(exitBadData, err)
	}
	return st, nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

func shortSum(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return s
}

var checkpointListCmd = &cobra.Command{
	Use:   "list FILE",
	Short: "List the checkpoints in FILE (step, generation, committed, preset, size, sha256)",
	Long: `list prints one row per checkpoint in FILE. A checkpoint whose record cannot be read shows
as a DAMAGED row; then list also says how many are damaged and exits with status 1.`,
	Args: cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		st, err := openCheckpoint(args[0])
		if err != nil {
			return err
		}
		defer st.Close()
		list, err := st.List()
		if err != nil {
			return withExit(exitBadData, err)
		}
		w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "STEP\tGENERATION\tCOMMITTED\tPRESET\tSIZE\tSHA256")
		damaged := 0
		for _, in := range list {
			if in.Err != nil {
				damaged++
				fmt.Fprintf(w, "%d\t-\t%v\t-\t-\tDAMAGED: %v\n", in.Step, in.Committed, in.Err)
				continue
			}
			fmt.Fprintf(w, "%d\t%d\t%v\t%s\t%s\t%s\n", in.Step, in.Generation, in.Committed, in.Preset, humanBytes(in.Bytes), shortSum(in.SHA256))
		}
		if err := w.Flush(); err != nil {
			return err
		}
		if len(list) == 0 {
			fmt.Fprintf(cmd.OutOrStdout(), "%s holds no checkpoints\n", args[0])
		}
		if damaged > 0 {
			return withExit(exitBadData, fmt.Errorf("%s: %d of %d checkpoints are damaged (the DAMAGED rows)", args[0], damaged, len(list)))
		}
		return nil
	},
}

func newCheckpointVerifyCmd() *cobra.Command {
	var step int64
	cmd := &cobra.Command{
		Use:   "verify FILE [--step N]",
		Short: "Check every byte of the checkpoints in FILE (or of step N) against their sha256",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := openCheckpoint(args[0])
			if err != nil {
				return err
			}
			defer st.Close()
			steps := []int64{step}
			if step < 0 {
				list, err := st.List()
				if err != nil {
					return withExit(exitBadData, err)
				}
				steps = steps[:0]
				for _, in := range list {
					steps = append(steps, in.Step)
				}
			}
			bad := 0
			for _, s := range steps {
				if err := st.Verify(s); err != nil {
					if errors.Is(err, checkpoint.ErrNotFound) {
						return withExit(exitUsage, fmt.Errorf("%s has no checkpoint of step %d", args[0], s))
					}
					bad++
					fmt.Fprintf(cmd.OutOrStdout(), "step %d: %v\n", s, err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "step %d: ok\n", s)
			}
			if bad > 0 {
				return withExit(exitBadData, fmt.Errorf("%s: %d of %d checkpoints are damaged", args[0], bad, len(steps)))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d checkpoints verified\n", args[0], len(steps))
			return nil
		},
	}
	addStepFlag(cmd.Flags(), &step, "verify only this step (default: all)")
	return cmd
}

func newCheckpointExportCmd() *cobra.Command {
	var (
		step  int64
		ema   bool
		out   string
		force bool
	)
	cmd := &cobra.Command{
		Use:   "export FILE [--step N] [--ema] --out model.safetensors",
		Short: "Write a checkpoint's weights as safetensors with the reference PyTorch names and shapes",
		Long: `export writes the parameters (or with --ema the EMA weights, which the paper samples from) of
one checkpoint (default: the newest that verifies) as a safetensors file whose tensor names and
shapes are the reference PyTorch model's state_dict, loadable with safetensors.torch.load_file
and by anchors/pytorch/parity.py. The output is written atomically.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return withExit(exitUsage, errors.New("checkpoint export: --out FILE is required"))
			}
			in, err := trainer.CheckpointFileIn(args[0])
			if err != nil {
				return withExit(exitUsage, err)
			}
			// The run configs beside the checkpoint (a trainer's folder, a ddpm local run's) are
			// what sample and eval need to read it: never replaced, as sample --out refuses too.
			cfgs := []inputFile{{"the checkpoint", in},
				{"the run config", filepath.Join(filepath.Dir(in), trainer.ConfigFile)},
				{"the run config", filepath.Join(filepath.Dir(filepath.Dir(in)), trainer.ConfigFile)}}
			// The checkpoint first: a missing one is the mistake to name, not an existing --out.
			st, err := openCheckpoint(args[0])
			if err != nil {
				return err
			}
			defer st.Close()
			// What no --force lets through first, then the name, then an existing file (see ddpm loss).
			if err := checkOutPath("--out", out, true, cfgs...); err != nil {
				return withExit(exitUsage, fmt.Errorf("checkpoint export: %w", err))
			}
			if err := checkOutNames(".safetensors", "the weights are written as safetensors", outFile{"--out", out}); err != nil {
				return withExit(exitUsage, fmt.Errorf("checkpoint export: %w", err))
			}
			if err := checkOutPath("--out", out, force, cfgs...); err != nil {
				return withExit(exitUsage, fmt.Errorf("checkpoint export: %w", err))
			}
			var c *checkpoint.Checkpoint
			if step >= 0 {
				c, err = st.Get(step)
			} else {
				c, err = st.LatestVerified()
			}
			switch {
			case errors.Is(err, checkpoint.ErrNotFound):
				return withExit(exitUsage, err)
			case err != nil:
				return withExit(exitBadData, err)
			}
			if err := checkpoint.Export(out, c, ema); err != nil {
				return withExit(exitBadData, err)
			}
			which := "parameters"
			if ema {
				which = "EMA weights"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: step %d %s (%d tensors, preset %s) -> %s\n", args[0], c.Step, which, len(c.Tensors), c.Preset, out)
			return nil
		},
	}
	addStepFlag(cmd.Flags(), &step, "checkpoint step (default: the newest that verifies)")
	cmd.Flags().BoolVar(&ema, "ema", false, "export the EMA weights instead of the parameters")
	cmd.Flags().StringVar(&out, "out", "", "output safetensors file (required)")
	cmd.Flags().BoolVar(&force, "force", false, "replace --out if it already exists")
	return cmd
}

var checkpointCompactCmd = &cobra.Command{
	Use:   "compact FILE",
	Short: "Rewrite FILE without free pages (the file must not be open in a trainer)",
	Args:  cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		// Only a readable checkpoint file is rewritten (a file of anything else is left as is).
		st, err := openCheckpoint(args[0])
		if err != nil {
			return err
		}
		file := st.Path()
		st.Close()
		before, after, err := checkpoint.Compact(file, checkpoint.Options{})
		if err != nil {
			return withExit(exitBadData, err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s: %s -> %s\n", file, humanBytes(before), humanBytes(after))
		return nil
	},
}

func newCheckpointFetchCmd() *cobra.Command {
	var (
		step int64
		out  string
		sec  *tlsauth.Config
	)
	cmd := &cobra.Command{
		Use:   "fetch ADDR --step N --out FILE (--certs DIR | --insecure)",
		Short: "Copy a committed checkpoint from a running trainer (gRPC at ADDR) into FILE, verified",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" || step < 0 {
				return withExit(exitUsage, errors.New("checkpoint fetch: --step N and --out FILE are required"))
			}
			if err := flagsFromEnv(cmd.Flags()); err != nil {
				return withExit(exitUsage, err)
			}
			b, err := loadSecurity(sec, nil)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			c, err := checkpoint.Download(ctx, args[0], step, b.DialOptions()...)
			if err != nil {
				return withExit(exitBadData, err)
			}
			st, err := checkpoint.Open(out, checkpoint.Options{})
			if err != nil {
				return withExit(exitBadData, err)
			}
			defer st.Close()
			if _, err := st.Save(c); err != nil {
				return withExit(exitBadData, err)
			}
			if err := st.MarkCommitted(step); err != nil {
				return withExit(exitBadData, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: step %d (sha256 %s) -> %s\n", args[0], step, shortSum(c.SHA256), out)
			return nil
		},
	}
	addStepFlag(cmd.Flags(), &step, "committed step to copy (required)")
	cmd.Flags().StringVar(&out, "out", "", "checkpoint file to write (created if missing; required)")
	sec = tlsauth.AddFlags(cmd.Flags())
	return cmd
}

func init() {
	checkpointCmd.AddCommand(checkpointListCmd, newCheckpointVerifyCmd(), newCheckpointExportCmd(), checkpointCompactCmd, newCheckpointFetchCmd())
	rootCmd.AddCommand(checkpointCmd)
}
