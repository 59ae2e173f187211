package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/internal/localrun"
	"ddpm/internal/tlsauth"
	"ddpm/trainer"
)

// `ddpm checkpoint`: inspect, verify, export, compact and copy bbolt checkpoint files. Exit
// status 1 for a damaged or unreadable checkpoint, 2 for a command line that cannot be run
// (also a file a running trainer holds: nothing is wrong with it).
var checkpointCmd = &cobra.Command{
	Use:   "checkpoint",
	Short: "Inspect, verify, export, compact and fetch checkpoint files; roll a run back to one",
	Long: `A trainer keeps its checkpoints in one bbolt file (checkpoints.db in its --data-dir). These
commands open it read-only, except compact. A file a running trainer holds cannot be opened:
the commands wait one second for its lock, then name the process that holds it (on a machine
busy training, starting the command and that answer take a few seconds in all) and exit with
status 2 (status 1 means a damaged checkpoint); copy a committed checkpoint out of the live
trainer instead: ddpm checkpoint fetch TRAINER_ADDR --step N --out COPY.db (a standalone
trainer serves no copy: stop it, SIGTERM, and it resumes from its newest checkpoint when
started again).
ddpm checkpoint rollback restarts a run that waits for a lost checkpoint from an older one.`,
}

// checkpointFileArg is the Args check of checkpoint list, verify, export and compact, which take
// one FILE. With none it says what FILE may be; with more, how many (it was cobra's "accepts 1
// arg(s), received 0"). The caller's usage wrapper adds the command's name and usage line.
func checkpointFileArg(_ *cobra.Command, args []string) error {
	switch {
	case len(args) == 0:
		return errors.New("FILE is required: a checkpoint file (checkpoints.db), a trainer's folder or a ddpm local run folder")
	case len(args) > 1:
		return fmt.Errorf("one FILE, got %d: %s", len(args), strings.Join(args, " "))
	}
	return nil
}

// openCheckpoint opens file (or the checkpoint file of a folder, see trainer.CheckpointFileIn)
// read-only and turns the usual failures into one clear line.
func openCheckpoint(path string) (*checkpoint.Store, error) {
	file := path
	// A folder named checkpoints.db is the file in question, unless it holds one of its own.
	if _, err := os.Stat(filepath.Join(path, trainer.CheckpointFile)); err == nil || !isDir(path) || filepath.Base(path) != trainer.CheckpointFile {
		var err error
		if file, err = trainer.CheckpointFileIn(path); err != nil {
			return nil, withExit(exitUsage, noCheckpointYet(path, err))
		}
	}
	if isDir(file) { // DIR/checkpoints.db a folder: bbolt would call it damaged
		return nil, withExit(exitUsage, fmt.Errorf("checkpoint: %s is a directory, not a checkpoint file (a trainer keeps its checkpoints in a file of that name: move the folder out of the way)", file))
	}
	if err := checkCheckpointKind("", file); err != nil {
		return nil, err
	}
	st, err := checkpoint.Open(file, checkpoint.Options{ReadOnly: true})
	switch {
	case errors.Is(err, checkpoint.ErrInUse):
		return nil, inUseExit(err)
	case errors.Is(err, os.ErrNotExist):
		return nil, withExit(exitUsage, fmt.Errorf("checkpoint file %s does not exist", file))
	case errors.Is(err, os.ErrPermission):
		return nil, checkpointPermission(file)
	case err != nil:
		return nil, withExit(exitBadData, err)
	}
	return st, nil
}

// openRunCheckpoint is openCheckpoint for list and verify, which also find out, of a ddpm local
// run folder path, which trainers' files there cannot be opened as checkpoint files (damaged:
// checkpoint.ErrCorruptCheckpoint), as trainer.CheckpointFileIn passes over them in silence;
// damaged lists them (nil for any other path). The store is the file CheckpointFileIn takes, or
// when that is a damaged one, the first other (its holder named if it is in use). An error of
// opening it ends with the damaged files ("; F is damaged too ..."); when every trainer's file
// is damaged, it is one line naming them, status 1:
//
//	checkpoint runs/a: every trainer's checkpoint file is damaged (runs/a/trainer-0/checkpoints.db, runs/a/trainer-1/checkpoints.db cannot be opened as checkpoint files; ddpm checkpoint verify FILE names the damage of one)
//
// A file a trainer moved aside (checkpoints.db.damaged-UTCTIME) is not a trainer's file: it is
// neither read nor named.
func openRunCheckpoint(path string) (st *checkpoint.Store, damaged []string, err error) {
	files := trainerFilesIn(path)
	damaged, whole := damagedTrainerFiles(files)
	if len(damaged) == 0 || len(files) == 1 { // one trainer: openCheckpoint's line names its damage
		st, err := openCheckpoint(path)
		return st, nil, err
	}
	if len(whole) == 0 {
		return nil, damaged, withExit(exitBadData, fmt.Errorf("checkpoint %s: every trainer's checkpoint file is damaged (%s cannot be opened as checkpoint files; ddpm checkpoint verify FILE names the damage of one)",
			path, strings.Join(damaged, ", ")))
	}
	file, err := trainer.CheckpointFileIn(path)
	if err != nil || slices.Contains(damaged, file) {
		file = whole[0] // the others are held by live trainers: openCheckpoint names the holder
	}
	if st, err = openCheckpoint(file); err != nil {
		return nil, damaged, damagedToo(err, damaged)
	}
	return st, damaged, nil
}

// damagedTrainerFiles splits the trainers' checkpoint files of a run folder (trainerFilesIn)
// into those that cannot be opened as checkpoint files (damaged: checkpoint.ErrCorruptCheckpoint)
// and the others (whole: opened, held by a live trainer, unreadable, or a directory, which
// openCheckpoint names if it is the one taken).
func damagedTrainerFiles(files []string) (damaged, whole []string) {
	for _, f := range files {
		if isDir(f) {
			whole = append(whole, f)
			continue
		}
		st, err := checkpoint.Open(f, checkpoint.Options{ReadOnly: true, LockTimeout: 100 * time.Millisecond})
		if err == nil {
			st.Close()
		}
		if errors.Is(err, checkpoint.ErrCorruptCheckpoint) {
			damaged = append(damaged, f)
		} else {
			whole = append(whole, f)
		}
	}
	return damaged, whole
}

// damagedRead is the warning line of command (list, export, sample, eval) that read the file
// read of a ddpm local run folder path because trainer-I files there are damaged, which
// trainer.CheckpointFileIn passes over in silence; "" for any other path, or none damaged:
//
//	ddpm sample: warning: runs/a/trainer-0/checkpoints.db is damaged (it cannot be opened as a checkpoint file); this read runs/a/trainer-1/checkpoints.db, the newest committed checkpoint of the run's other trainers (ddpm checkpoint verify runs/a/trainer-0/checkpoints.db names the damage)
func damagedRead(command, path, read string) string {
	files := trainerFilesIn(path)
	if len(files) < 2 {
		return ""
	}
	damaged, _ := damagedTrainerFiles(files)
	return damagedReadLine(command, damaged, read)
}

// damagedReadLine is damagedRead's line for the damaged files found ("" for none).
func damagedReadLine(command string, damaged []string, read string) string {
	if len(damaged) == 0 {
		return ""
	}
	return fmt.Sprintf("ddpm %s: warning: %s; this read %s, the newest committed checkpoint of the run's other trainers (%s)",
		command, damagedIs(damaged), read, damagedVerify(damaged))
}

// damagedIs says that the trainers' files damaged cannot be opened as checkpoint files:
// "runs/a/trainer-0/checkpoints.db is damaged (it cannot be opened as a checkpoint file)",
// "A, B are damaged (they cannot ...)".
func damagedIs(damaged []string) string {
	if len(damaged) == 1 {
		return damaged[0] + " is damaged (it cannot be opened as a checkpoint file)"
	}
	return strings.Join(damaged, ", ") + " are damaged (they cannot be opened as checkpoint files)"
}

// damagedToo adds to err (its exit status kept) that the trainers' files damaged are damaged:
// "ERR; runs/a/trainer-0/checkpoints.db is damaged too (...)". err itself without any.
func damagedToo(err error, damaged []string) error {
	if len(damaged) == 0 {
		return err
	}
	code := exitBadData
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	return withExit(code, fmt.Errorf("%w; %s", err, strings.Replace(damagedIs(damaged), " damaged (", " damaged too (", 1)))
}

// damagedVerify says how to see the damage of the trainers' files damaged: "ddpm checkpoint
// verify F names the damage" (with FILE for several).
func damagedVerify(damaged []string) string {
	if len(damaged) == 1 {
		return "ddpm checkpoint verify " + shellWord(damaged[0]) + " names the damage"
	}
	return "ddpm checkpoint verify FILE names the damage"
}

// trainerFilesIn lists the trainers' checkpoint files of path (localrun.TrainerCheckpointFiles,
// the files trainer.CheckpointFileIn chooses from) when it is a folder without a checkpoint file
// of its own; nil for any other path.
func trainerFilesIn(path string) []string {
	if !isDir(path) {
		return nil
	}
	if _, err := os.Stat(filepath.Join(path, trainer.CheckpointFile)); err == nil {
		return nil
	}
	return localrun.TrainerCheckpointFiles(path)
}

// checkpointPermission is the line, exit status 2, of a checkpoint file this user may not read
// (a trainer's volume of another user, a file made private): nothing is wrong with the file, so
// not status 1, which says a checkpoint is damaged.
//
//	checkpoint file runs/a/trainer-0/checkpoints.db cannot be opened: permission denied (the commands need read access to it)
func checkpointPermission(file string) error {
	return withExit(exitUsage, fmt.Errorf("checkpoint file %s cannot be opened: permission denied (the commands need read access to it)", file))
}

// inUseExit is the one line, exit status 2, of every command that reads a checkpoint file
// another process (a running trainer) holds: err (a checkpoint.ErrInUse) names the file and
// the holder; the hint says how to copy a committed checkpoint out of the live trainer. For
// trainer I of a ddpm local run folder (RUN/trainer-I/checkpoints.db beside RUN/local.json) it
// is the command to run, with the trainer's address, the run's certificates, a copy beside the
// run's run.yaml (which sample and export read) and where to find a committed step:
//
//	checkpoint: runs/a/trainer-0/checkpoints.db in use by process 4242 (trainer-0 of the ddpm local run runs/a: copy a committed checkpoint out of it with: ddpm checkpoint fetch 127.0.0.1:40001 --certs runs/a/certs --step N --out runs/a/step-N.db, N a committed step that ddpm status runs/a lists)
func inUseExit(err error) error {
	var iu *checkpoint.InUseError
	if errors.As(err, &iu) {
		if hint := localFetchHint(iu.Path); hint != "" {
			return withExit(exitUsage, fmt.Errorf("%w (%s)", err, hint))
		}
		if hint := holderHint(iu.PID); hint != "" {
			return withExit(exitUsage, fmt.Errorf("%w (%s)", err, hint))
		}
	}
	return withExit(exitUsage, fmt.Errorf("%w (a running trainer? copy a committed checkpoint with: ddpm checkpoint fetch TRAINER_ADDR --step N --out COPY.db)", err))
}

// noCheckpointYet rewords err, the refusal of a folder without a checkpoint file, for a ddpm
// local run folder (path holds local.json): its trainers have written none yet, and the line
// says when they will and how to go on; any other err is returned as it is:
//
//	checkpoint runs/a: a ddpm local run without a checkpoint yet (its trainers write the first at step 50, checkpoint_every of runs/a/run.yaml; ddpm local --resume runs/a trains on when the run is stopped)
func noCheckpointYet(path string, err error) error {
	if _, merr := localrun.ReadManifest(path); merr != nil {
		return err
	}
	every := "checkpoint_every"
	if run, cerr := config.Load(filepath.Join(path, localrun.ConfigFile)); cerr == nil {
		every = fmt.Sprintf("step %d, checkpoint_every", run.CheckpointEvery)
	}
	return fmt.Errorf("checkpoint %s: a ddpm local run without a checkpoint yet (its trainers write the first at %s of %s; ddpm local --resume %s trains on when the run is stopped)",
		path, every, filepath.Join(path, localrun.ConfigFile), shellWord(path))
}

// noneYetLine rewords err, a read of the newest checkpoint of file that found none
// (checkpoint.ErrNoneYet: "F holds no checkpoint yet"), for a trainer's file in a ddpm local
// run folder: the run has written none yet, noCheckpointYet's line says when it will (it was
// "F holds no verified checkpoint: checkpoint not found", as if they were damaged). Any other
// err is returned as it is.
func noneYetLine(file string, err error) error {
	if !errors.Is(err, checkpoint.ErrNoneYet) {
		return err
	}
	if run := localRunOfFile(file); run != "" {
		return noCheckpointYet(run, err)
	}
	return err
}

// localRunOfFile is the ddpm local run folder whose trainer file (RUN/trainer-I/checkpoints.db)
// file is, "" for any other file.
func localRunOfFile(file string) string {
	tdir := filepath.Dir(file)
	run := filepath.Dir(tdir)
	if filepath.Base(file) != trainer.CheckpointFile || !strings.HasPrefix(filepath.Base(tdir), "trainer-") {
		return ""
	}
	if _, err := localrun.ReadManifest(run); err != nil {
		return ""
	}
	return run
}

// noneYetSentence is checkpoint list's line for path (file, once opened) that holds no
// checkpoint: for a ddpm local run's trainer file or a trainer's folder with its run.yaml, when
// the first is written.
//
//	runs/a holds no checkpoint yet (its trainers write the first at step 50, checkpoint_every of runs/a/run.yaml)
func noneYetSentence(path, file string) string {
	if run := localRunOfFile(file); run != "" {
		if r, err := config.Load(filepath.Join(run, localrun.ConfigFile)); err == nil {
			return fmt.Sprintf("%s holds no checkpoint yet (its trainers write the first at step %d, checkpoint_every of %s)", path, r.CheckpointEvery, filepath.Join(run, localrun.ConfigFile))
		}
	}
	// A trainer's --data-dir (a standalone trainer's too): its run.yaml beside the file.
	yaml := filepath.Join(filepath.Dir(file), trainer.ConfigFile)
	if r, err := config.Load(yaml); err == nil {
		return fmt.Sprintf("%s holds no checkpoint yet (its trainer writes the first at step %d, checkpoint_every of %s)", path, r.CheckpointEvery, yaml)
	}
	return path + " holds no checkpoint yet"
}

// holderHint is inUseExit's hint from the command line of the process pid that holds the file
// (/proc/PID/cmdline, Linux), "" when it is no ddpm trainer or cannot be read:
//
//   - a standalone trainer serves no checkpoint transfer, so the fetch the general hint names
//     cannot be done: "a standalone trainer (ddpm trainer --standalone), which serves no copy:
//     stop it (kill -TERM 4242: it finishes its step) and run this command again; started
//     again, it resumes from its newest checkpoint";
//   - a cluster trainer: the fetch with its own --advertise (else --listen, an unspecified host
//     as 127.0.0.1) and --certs (resolved against its working folder) or --insecure:
//     "a cluster trainer: copy a committed checkpoint out of it with: ddpm checkpoint fetch
//     127.0.0.1:7100 --certs /run/certs --step N --out COPY.db, N a committed step that ddpm
//     status lists".
func holderHint(pid int) string {
	if pid <= 0 {
		return ""
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	// The ddpm binary's "trainer" subcommand (whatever the binary's folder).
	at := slices.Index(args, "trainer")
	if at < 1 || !strings.HasPrefix(filepath.Base(args[at-1]), "ddpm") {
		return ""
	}
	flags := map[string]string{}
	for i := at + 1; i < len(args); i++ {
		name, val, hasVal := strings.Cut(args[i], "=")
		if !strings.HasPrefix(name, "--") {
			continue
		}
		name = strings.TrimPrefix(name, "--")
		switch name {
		case "standalone", "insecure":
			flags[name] = "true"
		case "listen", "advertise", "certs":
			if !hasVal && i+1 < len(args) {
				i++
				val = args[i]
			}
			flags[name] = val
		}
	}
	if flags["standalone"] == "true" {
		return fmt.Sprintf("a standalone trainer (ddpm trainer --standalone), which serves no copy: stop it (kill -TERM %d: it finishes its step) and run this command again; started again, it resumes from its newest checkpoint", pid)
	}
	addr := flags["advertise"]
	if addr == "" {
		addr = flags["listen"]
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	sec := "--insecure"
	if certs := flags["certs"]; certs != "" {
		if !filepath.IsAbs(certs) {
			if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil {
				certs = filepath.Join(cwd, certs)
			}
		}
		sec = "--certs " + shellWord(certs)
	} else if flags["insecure"] != "true" {
		sec = "--certs DIR"
	}
	return fmt.Sprintf("a cluster trainer: copy a committed checkpoint out of it with: ddpm checkpoint fetch %s %s --step N --out COPY.db, N a committed step that ddpm status lists", net.JoinHostPort(host, port), sec)
}

// localFetchHint is inUseExit's hint for file when it is a trainer's checkpoint file in a
// ddpm local run folder whose local.json names that trainer's port; "" otherwise.
func localFetchHint(file string) string {
	tdir := filepath.Dir(file)
	run := filepath.Dir(tdir)
	if filepath.Base(file) != trainer.CheckpointFile {
		return ""
	}
	m, err := localrun.ReadManifest(run)
	if err != nil {
		return ""
	}
	for i, p := range m.TrainerPorts {
		if localrun.TrainerDir(run, i) != tdir {
			continue
		}
		certs := shellWord(filepath.Join(run, localrun.CertsDir))
		return fmt.Sprintf("%s of the ddpm local run %s: copy a committed checkpoint out of it with: ddpm checkpoint fetch 127.0.0.1:%d --certs %s --step N --out %s, N a committed step that ddpm status %s lists",
			filepath.Base(tdir), shellWord(run), p.Listen, certs, shellWord(filepath.Join(run, "step-N.db")), shellWord(run))
	}
	return ""
}

// missingStep is the line, exit status 2, of a --step that st does not hold, naming the steps it
// does (as sample's line names the file):
//
//	--step 100: runs/a/trainer-0/checkpoints.db holds no checkpoint of that step (it holds steps 150, 200)
func missingStep(st *checkpoint.Store, step int64) error {
	held := "none"
	if list, err := st.List(); err == nil && len(list) > 0 {
		var steps []string
		for _, in := range list {
			steps = append(steps, fmt.Sprint(in.Step))
		}
		held = "steps " + strings.Join(steps, ", ")
		if len(steps) == 1 {
			held = "step " + steps[0]
		}
	}
	return withExit(exitUsage, fmt.Errorf("--step %d: %s holds no checkpoint of that step (it holds %s)", step, st.Path(), held))
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

// runFolderHelp says which file list and verify read of a ddpm local run folder.
const runFolderHelp = `Of a ddpm local run folder, list and verify read the file of the trainer holding the newest
committed checkpoint (trainer-0's unless another got further). When a trainer's file there
cannot be opened as a checkpoint file (damaged), list says so in a warning line on stderr,
naming it and the file it read instead, and exits as for that file; verify checks the file it
reads, then exits with status 1 naming both. When every trainer's file is damaged, one line
names them, status 1. A file a trainer moved aside (checkpoints.db.damaged-UTCTIME) is not read.`

// stateHashHelp explains list's and verify's state hash.
const stateHashHelp = `The state hash (STATE) is a sha256 over what determines the rest of the run: the step, the
run-config hash, the dataset fingerprint, the model, the tensor layout, the parameters, the EMA,
Adam's moments and step, the RNG state and the data cursor. It leaves out the generation (which
coordinator generation wrote the checkpoint), so a run interrupted and resumed and the same run
uninterrupted show the same STATE at each step. SHA256 is the hash the ranks commit a
checkpoint by; it also covers the generation, so it differs between them.`

var checkpointListCmd = &cobra.Command{
	Use:   "list FILE",
	Short: "List the checkpoints in FILE (step, generation, committed, model, size, sha256, state hash)",
	Long: `list prints one row per checkpoint in FILE. It reads every checkpoint whole to compute its
state hash (about a second per GB). A checkpoint whose record cannot be read or whose bytes do
not hash to its sha256 shows as a DAMAGED row; then list also says how many are damaged and
exits with status 1.

` + runFolderHelp + `

` + stateHashHelp,
	Args: checkpointFileArg,
	RunE: func(cmd *cobra.Command, args []string) error {
		st, damagedFiles, err := openRunCheckpoint(args[0])
		if err != nil {
			return err
		}
		defer st.Close()
		if line := damagedReadLine("checkpoint list", damagedFiles, st.Path()); line != "" {
			// The rows are of another trainer's file: which, and which file is damaged.
			fmt.Fprintln(cmd.ErrOrStderr(), line)
		}
		list, err := st.List()
		if err != nil {
			return withExit(exitBadData, err)
		}
		if len(list) == 0 {
			// No header over no rows: the line says when the first will be there.
			fmt.Fprintln(cmd.OutOrStdout(), noneYetSentence(args[0], st.Path()))
			return nil
		}
		w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "STEP\tGENERATION\tCOMMITTED\tMODEL\tSIZE\tSHA256\tSTATE")
		damaged := 0
		for _, in := range list {
			if in.Err != nil {
				damaged++
				fmt.Fprintf(w, "%d\t-\t%v\t-\t-\tDAMAGED: %v\n", in.Step, in.Committed, in.Err)
				continue
			}
			state, err := st.VerifyState(in.Step)
			if err != nil {
				damaged++
				fmt.Fprintf(w, "%d\t%d\t%v\t%s\t%s\t%s\tDAMAGED: %v\n", in.Step, in.Generation, in.Committed, in.Preset, humanBytes(in.Bytes), shortSum(in.SHA256), err)
				continue
			}
			fmt.Fprintf(w, "%d\t%d\t%v\t%s\t%s\t%s\t%s\n", in.Step, in.Generation, in.Committed, in.Preset, humanBytes(in.Bytes), shortSum(in.SHA256), shortSum(state))
		}
		if err := w.Flush(); err != nil {
			return err
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
		Long: `verify re-hashes every checkpoint in FILE (or step N) and compares with its sha256; each good
one is printed with its state hash in full; a damaged one, status 1.

` + runFolderHelp + `

` + stateHashHelp,
		Args: checkpointFileArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, damaged, err := openRunCheckpoint(args[0])
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
				state, err := st.VerifyState(s)
				if err != nil {
					if errors.Is(err, checkpoint.ErrNotFound) {
						return damagedToo(missingStep(st, s), damaged)
					}
					bad++
					fmt.Fprintf(cmd.OutOrStdout(), "step %d: %v\n", s, err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "step %d: ok, state %s\n", s, state)
			}
			if bad > 0 {
				return damagedToo(withExit(exitBadData, fmt.Errorf("%s: %d of %d checkpoints are damaged", args[0], bad, len(steps))), damaged)
			}
			if len(damaged) > 0 {
				// What verified is another trainer's file; the run folder holds damage still.
				return withExit(exitBadData, fmt.Errorf("%s: %s verified in %s, the newest committed checkpoint of the run's other trainers, but %s: %s",
					args[0], countNoun(len(steps), "checkpoint", "checkpoints"), st.Path(), damagedIs(damaged), damagedVerify(damaged)))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s verified\n", args[0], countNoun(len(steps), "checkpoint", "checkpoints"))
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
		Args: checkpointFileArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return withExit(exitUsage, errors.New("checkpoint export: --out FILE is required"))
			}
			in, err := trainer.CheckpointFileIn(args[0])
			if err != nil {
				return withExit(exitUsage, noCheckpointYet(args[0], err))
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
			if line := damagedRead("checkpoint export", args[0], st.Path()); line != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), line)
			}
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
			case errors.Is(err, checkpoint.ErrNotFound) && step >= 0:
				return missingStep(st, step)
			case errors.Is(err, checkpoint.ErrNotFound):
				return withExit(exitUsage, noneYetLine(st.Path(), err))
			case err != nil:
				return withExit(exitBadData, err)
			}
			if err := checkpoint.Export(out, c, ema); err != nil {
				return withExit(exitBadData, err)
			}
			if step < 0 {
				if msg := damagedNewerWarning("ddpm checkpoint export", st.Path(), c.Step); msg != "" {
					fmt.Fprintln(cmd.ErrOrStderr(), msg)
				}
			}
			which := "parameters"
			if ema {
				which = "EMA weights"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: step %d %s (%d tensors, model %s) -> %s\n", args[0], c.Step, which, len(c.Tensors), c.Preset, out)
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
	Long: `compact copies FILE's checkpoints into a new file without the free pages that pruned
steps leave behind, cut to the pages it uses, and renames it over FILE. It prints the size
before and after. A file that the copy would not make smaller (already compact) is left byte
for byte as it was. FILE must not be open in a trainer.`,
	Args: checkpointFileArg,
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
		if after == before {
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s, already compact (left as it was)\n", file, humanBytes(before))
			return nil
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s: %s -> %s\n", file, humanBytes(before), humanBytes(after))
		return nil
	},
}

func newCheckpointFetchCmd() *cobra.Command {
	var (
		step  int64
		out   string
		force bool
		sec   *tlsauth.Config
	)
	cmd := &cobra.Command{
		Use:   "fetch ADDR --step N --out FILE (--certs DIR | --insecure) [--force]",
		Short: "Copy a committed checkpoint from a running trainer (gRPC at ADDR) into FILE, verified",
		Long: `fetch copies committed checkpoint N from the trainer at ADDR, verifies it against its sha256
and stores it, committed, in the checkpoint file FILE (created if missing).

An existing FILE is a checkpoint store that collects steps, like a trainer's volume: a step of
the same run (the same run-config hash) is added beside the steps it holds without --force, and
fetching a step it already holds with the same sha256 changes nothing. A step it holds with
other bytes is replaced only with --force. A FILE holding checkpoints of another run, or
beside a run.yaml of another run, is refused (even with --force): fetch into a new file.

The copy is stored and committed in one transaction: a fetch that fails (a full disk, a crash)
leaves FILE's steps as they were, a replaced one committed with its old sha256.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" || step < 0 {
				return withExit(exitUsage, errors.New("checkpoint fetch: --step N and --out FILE are required"))
			}
			if err := fetchAddrArg(args[0]); err != nil {
				return err
			}
			if err := flagsFromEnv(cmd.Flags()); err != nil {
				return withExit(exitUsage, err)
			}
			if fi, err := os.Stat(out); err == nil && fi.IsDir() {
				return withExit(exitUsage, fmt.Errorf("checkpoint fetch: --out %s is a folder; name the checkpoint file to write (e.g. %s)", out, filepath.Join(out, trainer.CheckpointFile)))
			}
			if strings.EqualFold(filepath.Ext(out), ".safetensors") || sniffFile(out) == kindSafetensors {
				// Before the kind check, whose hint (--init takes weights) is for a file given to read.
				return withExit(exitUsage, fmt.Errorf("checkpoint fetch: --out %s: fetch writes a checkpoint file (checkpoints.db format), not safetensors; fetch into a .db file, then ddpm checkpoint export FILE --out %s writes its weights as safetensors",
					out, shellWord(out)))
			}
			if err := checkCheckpointKind("--out", out); err != nil {
				return err
			}
			if dir := filepath.Dir(out); !isDir(dir) {
				return withExit(exitUsage, fmt.Errorf("checkpoint fetch: --out %s: folder %s does not exist", out, dir))
			}
			b, err := loadSecurity(sec, nil)
			if err != nil {
				return clientCertsHint(cmd, sec, err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			c, err := checkpoint.Download(ctx, args[0], step, b.DialOptions()...)
			if err != nil {
				return fetchError(args[0], step, sec.Insecure, sec.Dir, b, err)
			}
			if err := checkFetchRunConfig(out, args[0], c); err != nil {
				return err
			}
			// The checks read the file read-only: a refused fetch leaves it byte for byte.
			held := false
			if fi, err := os.Stat(out); err == nil && fi.Size() > 0 {
				if held, err = checkFetchInto(out, args[0], c, force); err != nil {
					return err
				}
			}
			if held {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: step %d (sha256 %s) is already in %s, committed; unchanged\n", args[0], step, shortSum(c.SHA256), out)
				return nil
			}
			st, err := checkpoint.Open(out, checkpoint.Options{})
			if errors.Is(err, checkpoint.ErrInUse) {
				return inUseExit(err)
			} else if err != nil {
				return withExit(exitBadData, fmt.Errorf("checkpoint fetch: %w", err))
			}
			defer st.Close()
			// Stored and committed in one transaction, over a held copy with other bytes too
			// (--force): if it fails, the held copy stays as it was, committed.
			if _, err := st.ReplaceCommitted(c); err != nil {
				return withExit(exitBadData, fmt.Errorf("checkpoint fetch: %w (the checkpoints in %s are unchanged)", err, out))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: step %d (sha256 %s) -> %s\n", args[0], step, shortSum(c.SHA256), out)
			return nil
		},
	}
	addStepFlag(cmd.Flags(), &step, "committed step to copy (required)")
	cmd.Flags().StringVar(&out, "out", "", "checkpoint file to write (created if missing; required)")
	cmd.Flags().BoolVar(&force, "force", false, "replace a step --out already holds with other bytes")
	sec = tlsauth.AddFlags(cmd.Flags())
	return cmd
}

// fetchAddrArg refuses, in one line with exit status 2 before anything is dialed or written, an
// ADDR of checkpoint fetch that is no trainer's host:port: a ddpm local run folder (with the
// fetch command for its first trainer, when the run is going, else the folder itself, which the
// other commands read), any other file or folder, or a string that is not host:port. They were
// "rpc error: code = Unavailable desc = name resolver error: produced zero addresses", exit 1,
// after a --certs DIR the folder's own certs would have given.
//
//	checkpoint fetch: runs/a is a ddpm local run folder, not a trainer's address: ddpm checkpoint fetch 127.0.0.1:40021 --certs runs/a/certs --step N --out FILE copies from its trainer-0
//	checkpoint fetch: runs/a is a ddpm local run folder that is not running (its trainers serve no copy): read its checkpoints there, as ddpm checkpoint list runs/a does
//	checkpoint fetch: ADDR foo: not a host:port address (missing port in address); give a trainer's --listen address
func fetchAddrArg(addr string) error {
	if st, err := os.Stat(addr); err == nil {
		if m, merr := localrun.ReadManifest(addr); merr == nil && len(m.TrainerPorts) > 0 {
			if localrun.Running(addr) == nil {
				return withExit(exitUsage, fmt.Errorf("checkpoint fetch: %s is a ddpm local run folder that is not running (its trainers serve no copy): read its checkpoints there, as ddpm checkpoint list %s does",
					addr, shellWord(addr)))
			}
			return withExit(exitUsage, fmt.Errorf("checkpoint fetch: %s is a ddpm local run folder, not a trainer's address: ddpm checkpoint fetch %s --certs %s --step N --out FILE copies from its trainer-0",
				addr, localrun.Addr(m.TrainerPorts[0].Listen), shellWord(filepath.Join(addr, localrun.CertsDir))))
		}
		what := "a file"
		if st.IsDir() {
			what = "a folder"
		}
		return withExit(exitUsage, fmt.Errorf("checkpoint fetch: %s is %s, not a trainer's address (host:port, its --listen)", addr, what))
	}
	if err := checkHostPort(addr); err != nil {
		return withExit(exitUsage, fmt.Errorf("checkpoint fetch: ADDR %s: %v; give a trainer's --listen address", addr, err))
	}
	return nil
}

// fetchError turns a failed checkpoint.Download from addr into one line: a step the trainer
// holds no committed checkpoint of, or an address that serves no checkpoint transfer (a
// coordinator's), is a command line to change (exit 2); a plain-text dial (--insecure) the
// server hangs up on at once is named as a TLS server's likely refusal, a TLS dial (--certs)
// answered in plain gRPC as a trainer of an --insecure cluster (exit 2), and a certificate of
// another CA than --certs DIR's (either side refusing the other's) or another join secret as
// --certs of another cluster (exit 2).
func fetchError(addr string, step int64, insecure bool, certs string, sec *tlsauth.Bundle, err error) error {
	identified := sync.OnceValue(func() string { what, _ := coordinator.IdentifyPort(context.Background(), addr, sec); return what })
	switch {
	case !insecure && coordinator.CertRefusal(err):
		return otherCAError("checkpoint fetch", "the trainer at "+addr, certs)
	case !insecure && tlsauth.ServerRefusal(err) != "":
		// This process refused the server (a coordinator's or operator's certificate serving at
		// addr) and sent it nothing: not "the trainer refused --certs".
		return withExit(exitUsage, fmt.Errorf("checkpoint fetch: %s is not a trainer: %s", addr, tlsauth.ServerRefusal(err)))
	case !insecure && (status.Code(err) == codes.Unauthenticated || status.Code(err) == codes.PermissionDenied):
		// The same CA, another join secret, or a certificate whose role may not fetch (a
		// coordinator's): the trainer's own words name it.
		msg := err.Error()
		var se interface{ GRPCStatus() *status.Status }
		if errors.As(err, &se) {
			msg = se.GRPCStatus().Message()
		}
		return withExit(exitUsage, fmt.Errorf("checkpoint fetch: the trainer at %s refused --certs %s: %s", addr, certs, strings.TrimPrefix(msg, "ddpm: ")))
	case errors.Is(err, checkpoint.ErrNotFound):
		return withExit(exitUsage, fmt.Errorf("checkpoint fetch: %s holds no committed checkpoint of step %d (ddpm status lists the committed ones)", addr, step))
	case status.Code(err) == codes.Unimplemented && strings.Contains(status.Convert(err).Message(), "unexpected HTTP status code received from server"):
		// An HTTPS server (--http-tls) answers the gRPC request with 404, which gRPC reports as
		// Unimplemented: a trainer's --http-addr as much as a coordinator's.
		return withExit(exitUsage, fmt.Errorf("checkpoint fetch: %s is an HTTPS port (a ddpm trainer's or coordinator's --http-addr with --http-tls), not a trainer's checkpoint transfer: give a trainer's --listen address (ddpm status lists them)", addr))
	case status.Code(err) == codes.Unimplemented:
		return withExit(exitUsage, fmt.Errorf("checkpoint fetch: %s serves no checkpoint transfer (a coordinator's address? give a trainer's --listen address)", addr))
	case status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "connection error") && identified() != "":
		// A port that answers but not in gRPC: a coordinator's --raft-addr or --http-addr, a
		// trainer's --http-addr.
		return withExit(exitUsage, fmt.Errorf("checkpoint fetch: %s: give a trainer's --listen address (ddpm status lists them)", identified()))
	case !insecure && strings.Contains(err.Error(), "first record does not look like a TLS handshake"):
		// What answered the TLS hello in plain text is no HTTP/1 nor other plain-text port
		// (identified above): a gRPC server without TLS, a trainer of an --insecure cluster.
		return withExit(exitUsage, fmt.Errorf("checkpoint fetch: the trainer at %s serves gRPC in plain text (a trainer started with --insecure) and this process uses --certs: give --insecure instead of --certs", addr))
	case insecure && strings.Contains(err.Error(), "error reading server preface"):
		return withExit(exitBadData, fmt.Errorf("%w (the trainer at %s closed the connection at once: it may require TLS; give --certs DIR instead of --insecure)", err, addr))
	case status.Code(err) == codes.Unavailable:
		// Nothing listens there, or the host name does not resolve: say which, not gRPC's
		// "name resolver error: produced zero addresses".
		if why, _ := deadAddrs(context.Background(), []string{addr}); why != nil {
			return withExit(exitBadData, fmt.Errorf("checkpoint fetch: no trainer at %s: give a running trainer's --listen address (ddpm status lists them)", why[0]))
		}
	}
	return withExit(exitBadData, err)
}

// isDir reports whether path is an existing folder.
func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// checkFetchInto checks that the existing checkpoint file holds only checkpoints of c's run
// and no other bytes for c's step (unless force: then they are to be replaced); held reports
// that the file already holds c's step with c's sha256, committed (a fetch then changes
// nothing).
func checkFetchInto(file, addr string, c *checkpoint.Checkpoint, force bool) (held bool, err error) {
	st, err := checkpoint.Open(file, checkpoint.Options{ReadOnly: true})
	if errors.Is(err, checkpoint.ErrInUse) {
		return false, inUseExit(err)
	} else if err != nil {
		return false, withExit(exitBadData, fmt.Errorf("checkpoint fetch: %w", err))
	}
	defer st.Close()
	list, err := st.List()
	if err != nil {
		return false, withExit(exitBadData, err)
	}
	for _, in := range list {
		if in.Err == nil && in.ConfigHash != c.ConfigHash {
			return false, withExit(exitUsage, fmt.Errorf("checkpoint fetch: %s holds checkpoints of run config %.12s (step %d), step %d at %s belongs to run config %.12s; fetch it into a new file",
				file, in.ConfigHash, in.Step, c.Step, addr, c.ConfigHash))
		}
	}
	for _, in := range list {
		if in.Step != c.Step {
			continue
		}
		if in.Err == nil && in.SHA256 == c.SHA256 {
			held = in.Committed
			continue
		}
		what := "sha256 " + shortSum(in.SHA256)
		if in.Err != nil {
			what = "a damaged header"
		}
		if !force {
			return false, withExit(exitUsage, fmt.Errorf("checkpoint fetch: %s already holds step %d with %s, %s's has sha256 %s; give --force to replace it",
				file, c.Step, what, addr, shortSum(c.SHA256)))
		}
	}
	return held, nil
}

// checkFetchRunConfig refuses to fetch c into file when the run.yaml that sample and export
// would read it with (beside file, else in the folder above: trainer.ResolveCheckpoint) names
// another run: the weights would be read as that run's.
func checkFetchRunConfig(file, addr string, c *checkpoint.Checkpoint) error {
	for _, cand := range trainer.RunConfigPaths(file) {
		if _, err := os.Stat(cand); err != nil {
			continue
		}
		run, err := config.Load(cand)
		if err == nil && run.Hash() != c.ConfigHash {
			if filepath.Dir(cand) != filepath.Dir(file) {
				// The run.yaml of the folder above (file's own folder may be new and empty).
				return withExit(exitUsage, fmt.Errorf("checkpoint fetch: %s would be read with %s (the folder above) of run config %.12s, step %d at %s belongs to run config %.12s; fetch it into a folder with no other run's run.yaml in it or above it",
					file, cand, run.Hash(), c.Step, addr, c.ConfigHash))
			}
			return withExit(exitUsage, fmt.Errorf("checkpoint fetch: %s is beside %s of run config %.12s, step %d at %s belongs to run config %.12s; fetch it into a new folder",
				file, cand, run.Hash(), c.Step, addr, c.ConfigHash))
		}
		return nil
	}
	return nil
}

func init() {
	checkpointCmd.AddCommand(checkpointListCmd, newCheckpointVerifyCmd(), newCheckpointExportCmd(), checkpointCompactCmd, newCheckpointFetchCmd())
	rootCmd.AddCommand(checkpointCmd)
}
