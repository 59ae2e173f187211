package trainer

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/diffusion"
	"ddpm/internal/localrun"
	"ddpm/unet"
)

// The files of a trainer's volume (its --data-dir).
const (
	CheckpointFile = "checkpoints.db" // the bbolt checkpoint store
	ConfigFile     = "run.yaml"       // the run config the checkpoints belong to
	// InitFile names the --init weights the run's step 0 came from (their absolute path, one
	// line), when the trainer was given them: the EMA of its early checkpoints then holds
	// those weights, not a random initialization. Checkpoints record the weights' sha256
	// themselves (InitSHA256), on every volume the run's checkpoints reach; the file tells
	// of checkpoints written before they did.
	InitFile = "init.txt"
)

// Snapshot returns the replica's whole state as a checkpoint of step StepCount(). The arenas
// are copies, so training may go on while it is written.
func (tr *Trainer) Snapshot(gen uint64, fingerprint string) *checkpoint.Checkpoint {
	ts := tr.model.Tensors()
	infos := make([]checkpoint.TensorInfo, len(ts))
	for i, t := range ts {
		infos[i] = checkpoint.TensorInfo{Name: t.Name, Shape: t.Shape, Offset: t.Offset, Len: t.Len}
	}
	return &checkpoint.Checkpoint{
		Step: tr.step, Generation: gen, ConfigHash: tr.run.Hash(), DatasetFingerprint: fingerprint,
		Preset: tr.run.Model, Tensors: infos,
		Params: clone(tr.model.Params()), EMA: clone(tr.ema),
		AdamM: clone(tr.adam.M), AdamV: clone(tr.adam.V), OptStep: tr.adam.Step,
		// Every random draw is keyed by (seed, position); the cursor is all the sampler needs.
		// What the seed does not give is the run record: the start of a warm-started run
		// (InitSHA256) and the streak of skipped steps the step ends (NonFiniteStreak).
		RNG:    runRecord(tr.start, tr.badRun),
		Cursor: uint64(tr.step) * uint64(tr.run.GlobalBatch),
	}
}

func clone(x []float32) []float32 { return append([]float32(nil), x...) }

// Restore replaces the replica's state with c, the streak of consecutive skipped steps
// (MaxNonFiniteSteps) included, so that a resumed run stops with ErrDiverged at the step the
// same run uninterrupted does; a checkpoint written before checkpoints recorded the streak
// resumes with none. It returns ErrMismatch (naming what differs) when c belongs to another
// model preset, another run config, has arenas of another size or a run record this build
// cannot read; the replica is unchanged then.
func (tr *Trainer) Restore(c *checkpoint.Checkpoint) error {
	if err := tr.Compatible(c); err != nil {
		return err
	}
	copy(tr.model.Params(), c.Params)
	copy(tr.ema, c.EMA)
	copy(tr.adam.M, c.AdamM)
	copy(tr.adam.V, c.AdamV)
	tr.adam.Step = c.OptStep
	tr.step = c.Step
	start, streak, _ := parseRunRecord(c.RNG) // checked by Compatible
	tr.badRun = streak
	tr.start = bytes.Clone(start)
	return nil
}

// Compatible reports, as an ErrMismatch error, why c cannot be this run's state (nil if it can).
func (tr *Trainer) Compatible(c *checkpoint.Checkpoint) error {
	n := len(tr.model.Params())
	switch {
	case c.Preset != tr.run.Model:
		return fmt.Errorf("%w: checkpoint step %d holds model preset %q, the run trains %q", ErrMismatch, c.Step, c.Preset, tr.run.Model)
	case c.ConfigHash != tr.run.Hash():
		return fmt.Errorf("%w: checkpoint step %d belongs to run config %.12s, this run is %.12s", ErrMismatch, c.Step, c.ConfigHash, tr.run.Hash())
	case len(c.Params) != n || len(c.EMA) != n || len(c.AdamM) != n || len(c.AdamV) != n:
		return fmt.Errorf("%w: checkpoint step %d has arenas of %d/%d/%d/%d values, the model has %d parameters",
			ErrMismatch, c.Step, len(c.Params), len(c.EMA), len(c.AdamM), len(c.AdamV), n)
	case c.Step > tr.run.Steps:
		return fmt.Errorf("%w: checkpoint step %d is past the run's %d steps", ErrMismatch, c.Step, tr.run.Steps)
	}
	if _, _, err := parseRunRecord(c.RNG); err != nil {
		return fmt.Errorf("%w: checkpoint step %d: %w", ErrMismatch, c.Step, err)
	}
	return nil
}

// Reset puts the replica back to step 0: parameters initialized from the run's seed (or the
// weights of InitFrom), EMA equal to them, Adam zeroed, and the start record (InitSHA256) this
// trainer's own. A generation that starts at step 0 (no checkpoint committed yet) uses it.
func (tr *Trainer) Reset() {
	if tr.initial != nil {
		copy(tr.model.Params(), tr.initial)
	} else {
		tr.model.Init(tr.run.Seed)
	}
	copy(tr.ema, tr.model.Params())
	clear(tr.adam.M)
	clear(tr.adam.V)
	tr.adam.Step = 0
	tr.step = 0
	tr.badRun = 0
	tr.start = bytes.Clone(tr.initStart)
}

// InitFrom makes the weights in the safetensors file path (PyTorch names and shapes, as
// `ddpm checkpoint export` writes them) the run's step-0 state in place of the seed's
// initialization: a warm start, recorded in the checkpoints of the run (InitSHA256). Every rank
// must be given the same file; a rank that is not diverges and the first coordinated checkpoint
// stops the run. The replica is Reset.
func (tr *Trainer) InitFrom(path string) error {
	w := make([]float32, len(tr.model.Params()))
	if _, err := unet.ReadSafetensors(path, tr.model.Tensors(), w); err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("trainer: --init %s: %w", path, err) // not a mismatch: unreadable
		}
		return fmt.Errorf("%w: --init %s: %w", ErrMismatch, path, err)
	}
	tr.initial, tr.initErr = w, nil
	h := sha256.New()
	var buf [4 << 10]byte
	for len(w) > 0 {
		n := min(len(w), len(buf)/4)
		for i, v := range w[:n] {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
		h.Write(buf[:4*n])
		w = w[n:]
	}
	tr.initStart = append([]byte(initRecord), hex.EncodeToString(h.Sum(nil))...)
	tr.Reset()
	return nil
}

// DeferInit records that the --init weights given to this trainer could not be read: err is
// InitFrom's error (it names the file). A trainer resuming from a committed checkpoint needs no
// --init weights (the checkpoint holds the parameters, the EMA, Adam's moments and the run's
// start record, InitSHA256), so the weights are needed only when a generation starts at step 0:
// Node then fails it with ErrInitGone wrapping err, rather than starting from the seed's
// initialization in their place. InitFrom clears the record.
func (tr *Trainer) DeferInit(err error) { tr.initErr = err }

// initRecord opens the start record of a warm-started run (InitSHA256).
const initRecord = "init sha256:"

// streakRecord opens the line of the run record that counts the consecutive skipped steps a
// checkpoint's step ends (NonFiniteStreak).
const streakRecord = "non-finite steps:"

// runRecord is the run record a checkpoint keeps in its RNG field: the start record (nil for the
// seed's initialization, initRecord + sha256 for --init weights), then, only when the step ends
// a streak of streak > 0 consecutive steps skipped for a non-finite gradient, a line
// "\nnon-finite steps:N". A checkpoint outside such a streak (almost all of them) records the
// start alone, as checkpoints did before the streak was recorded, and hashes as they did.
func runRecord(start []byte, streak int) []byte {
	if streak == 0 {
		return bytes.Clone(start)
	}
	return fmt.Appendf(bytes.Clone(start), "\n%s%d", streakRecord, streak)
}

// parseRunRecord splits a checkpoint's run record (runRecord) into its start record and its
// streak of skipped steps: 0 when there is no streak line (every checkpoint written before the
// streak was recorded). A streak line that is not "non-finite steps:N" with N in
// 1..MaxNonFiniteSteps-1 (a run that reached MaxNonFiniteSteps ended with ErrDiverged) is an
// error naming it.
func parseRunRecord(rng []byte) (start []byte, streak int, err error) {
	start, line, found := bytes.Cut(rng, []byte("\n"))
	if !found {
		return rng, 0, nil
	}
	digits, ok := bytes.CutPrefix(line, []byte(streakRecord))
	n, aerr := strconv.Atoi(string(digits))
	if !ok || aerr != nil || strconv.Itoa(n) != string(digits) || n < 1 || n >= MaxNonFiniteSteps {
		return nil, 0, fmt.Errorf("run record line %q: want %q and a count of 1 to %d", line, streakRecord+"N", MaxNonFiniteSteps-1)
	}
	return start, n, nil
}

// NonFiniteStreak reads the streak a checkpoint's run record holds (checkpoint.Checkpoint.RNG,
// checkpoint.Info.RNG): how many consecutive steps up to and including the checkpoint's step
// were skipped for a non-finite gradient, which the run resumed from it goes on counting
// towards MaxNonFiniteSteps. 0 for a checkpoint whose step was not skipped, for one written
// before checkpoints recorded the streak, and for a record that cannot be read (Restore
// refuses that one with ErrMismatch).
func NonFiniteStreak(rng []byte) int {
	_, n, err := parseRunRecord(rng)
	if err != nil {
		return 0
	}
	return n
}

// InitSHA256 reads the start record a trainer keeps in its checkpoints' RNG field
// (checkpoint.Checkpoint.RNG, checkpoint.Info.RNG): the sha256 (hex) of the little-endian
// float32 parameters that InitFrom made the run's step 0 (the --init weights), or "" for a run
// started from the seed's initialization, or a checkpoint written before checkpoints recorded
// it. The counter-based draws keep no generator state (every one is keyed by (seed, position)),
// so the field holds the run record (runRecord): the one input of the run's start the seed does
// not give, and the streak of skipped steps (NonFiniteStreak) that follows it. It is hashed with
// the checkpoint and travels with every copy: a trainer that joins later and loads a fetched
// checkpoint writes the run's record into its own checkpoints, with or without --init of its
// own, so that `ddpm sample` of its volume knows the EMA's start (sampleEMAWarning).
func InitSHA256(rng []byte) string {
	start, _, _ := bytes.Cut(rng, []byte("\n")) // the start record, without a streak line
	sum, ok := strings.CutPrefix(string(start), initRecord)
	if !ok || len(sum) != 2*sha256.Size {
		return ""
	}
	if _, err := hex.DecodeString(sum); err != nil {
		return ""
	}
	return sum
}

// Loaded is a model restored from a checkpoint for sampling or evaluation.
type Loaded struct {
	Path  string // the checkpoint file
	Step  int64
	Run   config.Run // from the run.yaml beside the checkpoint file
	Model *unet.Model
	Sched *diffusion.Schedule
	// Eps is eps_theta of the loaded weights, without dropout.
	Eps diffusion.EpsModel
}

// Shape is the image shape the model takes: channels, height, width.
func (l *Loaded) Shape() (c, h, w int) {
	cfg := l.Model.Config()
	return cfg.InCh, cfg.Resolution, cfg.Resolution
}

// CheckpointFileIn turns what a user names (a checkpoint file, a trainer's --data-dir, or a
// `ddpm local` run folder, whose trainer holding the newest committed checkpoint it takes,
// trainer-0 unless another got further) into the checkpoint file. A path that does
// not exist is returned as is (opening it reports that); a folder without a checkpoint file is
// an error naming the folder.
func CheckpointFileIn(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil || !st.IsDir() {
		return path, nil
	}
	if cand := filepath.Join(path, CheckpointFile); exists(cand) {
		return cand, nil
	}
	if cand := newestTrainerStore(path); cand != "" {
		return cand, nil
	}
	return "", fmt.Errorf("checkpoint %s: a folder without %s (nor trainer-0/%s)", path, CheckpointFile, CheckpointFile)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// newestTrainerStore picks, in a `ddpm local` run folder, the trainer whose volume holds the
// newest committed checkpoint: trainer-0 unless another got further (a trainer stopped or cut
// off when the run ended keeps an older one; sampling it would silently show an earlier step).
// A store that cannot be read now (a live trainer's lock) does not compete; "" if trainer-0 has
// no store and no other could be read.
func newestTrainerStore(dir string) string {
	best, bestStep := "", int64(-1)
	zero := filepath.Join(dir, "trainer-0", CheckpointFile)
	for _, cand := range localrun.TrainerCheckpointFiles(dir) {
		// trainer-0's (first when it exists) is the default, even if it cannot be read now.
		if step := newestCommitted(cand); cand == zero || step > bestStep {
			best, bestStep = cand, step
		}
	}
	return best
}

// newestCommitted is the step of the newest committed checkpoint in the store at path, -1 when
// it has none or cannot be opened within a second.
func newestCommitted(path string) int64 {
	st, err := checkpoint.Open(path, checkpoint.Options{ReadOnly: true, LockTimeout: time.Second})
	if err != nil {
		return -1
	}
	defer st.Close()
	steps, err := st.Committed()
	if err != nil || len(steps) == 0 {
		return -1
	}
	return slices.Max(steps)
}

// RunConfigPaths are where the run config (ConfigFile) of checkpoint file is looked for, in
// order: beside it (a trainer's --data-dir, a fetched copy), then in the folder above (a run
// folder above its trainers' volumes).
func RunConfigPaths(file string) [2]string {
	dir := filepath.Dir(file)
	return [2]string{filepath.Join(dir, ConfigFile), filepath.Join(filepath.Dir(dir), ConfigFile)}
}

// ResolveCheckpoint turns what a user names (see CheckpointFileIn) into the checkpoint file and
// the run.yaml that describes it (the first of RunConfigPaths that exists); without one the
// error says which file to copy where.
func ResolveCheckpoint(path string) (file, cfg string, err error) {
	if _, err := os.Stat(path); err != nil {
		return "", "", fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if file, err = CheckpointFileIn(path); err != nil {
		return "", "", err
	}
	for _, cand := range RunConfigPaths(file) {
		if _, err := os.Stat(cand); err == nil {
			return file, cand, nil
		}
	}
	return "", "", fmt.Errorf("checkpoint %s: no %s beside it (nor in the folder above) to say which run it belongs to; the model is built from the run config: copy the run's %s (from its run folder or the trainer's --data-dir) into %s",
		file, ConfigFile, ConfigFile, filepath.Dir(file))
}

// LoadForEval opens the checkpoint path names (see ResolveCheckpoint) read-only, takes step (the
// newest verified one if step < 0), and builds the model with its EMA weights (ema) or raw
// parameters. wantModel, if not "", is the U-Net preset the caller expects; a checkpoint of
// another preset is ErrMismatch.
func LoadForEval(path string, step int64, ema bool, wantModel string) (*Loaded, error) {
	file, cfgPath, err := ResolveCheckpoint(path)
	if err != nil {
		return nil, err
	}
	run, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	st, err := checkpoint.Open(file, checkpoint.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var c *checkpoint.Checkpoint
	if step < 0 {
		c, err = st.LatestVerified()
	} else {
		c, err = st.Get(step)
	}
	if err != nil {
		return nil, err
	}
	if wantModel != "" && c.Preset != wantModel {
		return nil, fmt.Errorf("%w: %s step %d holds model preset %q, not %q", ErrMismatch, file, c.Step, c.Preset, wantModel)
	}
	if c.Preset != run.Model || c.ConfigHash != run.Hash() {
		return nil, fmt.Errorf("%w: %s step %d (preset %q, config %.12s) does not belong to %s (model %q, config %.12s)",
			ErrMismatch, file, c.Step, c.Preset, c.ConfigHash, cfgPath, run.Model, run.Hash())
	}
	ucfg, err := unet.Preset(c.Preset)
	if err != nil {
		return nil, err
	}
	ucfg.Dropout = 0
	m, err := unet.New(ucfg)
	if err != nil {
		return nil, err
	}
	m.SetInference(true) // sampling and evaluation only run Forward: layers share their buffers
	w := c.EMA
	if !ema || len(w) == 0 {
		w = c.Params
	}
	if len(w) != len(m.Params()) {
		return nil, fmt.Errorf("%w: %s step %d has %d parameters, model %q has %d", ErrMismatch, file, c.Step, len(w), c.Preset, len(m.Params()))
	}
	copy(m.Params(), w)
	sched, err := NewSchedule(run)
	if err != nil {
		return nil, err
	}
	eps := func(xt []float32, t []int32, batch int) []float32 { return m.Forward(xt, t, batch, nil) }
	return &Loaded{Path: file, Step: c.Step, Run: run, Model: m, Sched: sched, Eps: eps}, nil
}

var _ = errors.New
