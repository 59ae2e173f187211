package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"ddpm/config"
	"ddpm/internal/localrun"
	"ddpm/internal/sniff"
	"ddpm/internal/viz"
)

// The checks every command applies to its command line before it starts work: output files,
// image counts, and the progress line on stderr.

// exitInterrupted is the exit status of a command stopped by SIGINT or SIGTERM (128 + SIGINT).
const exitInterrupted = 130

// inputFile is a file or folder a command reads: what names it for the user ("the checkpoint",
// "--interpolate"), path is where it is ("" for none). An output may not overwrite it.
type inputFile struct{ what, path string }

// outFile is an output file a command writes: its flag and path ("" for none).
type outFile struct{ flag, path string }

// checkOutPath: an output file (empty: none) must not be "-" (no command writes its files to
// stdout), a directory, one of the command's inputs (or lie in a folder that is one), or a
// file a run reads (a run config, a checkpoint file, a run manifest, a dataset file: see
// sniffFile; the safetensors weights a ddpm local run's local.json names as its --init: see
// runWithInit) even with force; it must not exist unless force (nothing is overwritten by
// accident), and its folder must exist. The error is one line naming the flag
// and the path (and the input it would overwrite); callers exit with status 2.
func checkOutPath(flag, path string, force bool, inputs ...inputFile) error {
	if path == "" {
		return nil
	}
	if path == "-" {
		return fmt.Errorf("%s -: the output is written to a file, not to stdout; give a file name", flag)
	}
	st, err := os.Stat(path)
	if err == nil && st.IsDir() {
		return fmt.Errorf("%s %s is a directory, not a file", flag, path)
	}
	if err == nil {
		// An existing output may be an input under another name (a link, another spelling):
		// refused with or without force.
		for _, in := range inputs {
			if in.path == "" {
				continue
			}
			ist, ierr := os.Stat(in.path)
			if ierr != nil {
				continue
			}
			if os.SameFile(st, ist) {
				return fmt.Errorf("%s %s is the same file as %s %s, an input; nothing was written", flag, path, in.what, in.path)
			}
			if ist.IsDir() && insideDir(path, ist) {
				return fmt.Errorf("%s %s is inside %s %s, an input; nothing was written", flag, path, in.what, in.path)
			}
		}
		// A run's own input (its run.yaml, checkpoints.db, dataset) is no output, --force or not.
		if kind := sniffFile(path); runInputKinds[kind] {
			return fmt.Errorf("%s %s is %s, the input of a run; an output never replaces one (nothing was written)", flag, path, kind)
		} else if kind == kindSafetensors {
			if run := runWithInit(path, st); run != "" {
				return fmt.Errorf("%s %s is the --init weights of the run in %s, the input of a run; an output never replaces one (nothing was written)", flag, path, run)
			}
		}
		if !force {
			return fmt.Errorf("%s %s already exists (give --force to replace it)", flag, path)
		}
	}
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("%s %s: folder %s does not exist", flag, path, dir)
	}
	// Outputs are written as a temporary file in the same folder, renamed into place: try that
	// now (a read-only mount, a folder of another user), not after the work.
	probe, err := os.CreateTemp(dir, ".ddpm-probe-*")
	if err != nil {
		if pe, ok := err.(*os.PathError); ok {
			err = pe.Err
		}
		return fmt.Errorf("%s %s: cannot create a file in folder %s (%v)", flag, path, dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	return nil
}

// runWithInit names the folder of a `ddpm local` run whose local.json gives the file st (at
// path) as its --init weights, or "" for none. Only local.json records a run's --init, so the
// runs looked at are those whose folder is path's folder, one of its parent folders, a folder
// directly inside path's folder (ddpm local --out RUN --init W.safetensors, both in the working
// folder), or a folder two levels inside the folder above path's (make demo's runs/demo-DATE
// beside demo/mnist-tiny.safetensors; not when that folder is the file system's root). A
// relative --init in an older manifest is taken relative to its run folder.
func runWithInit(path string, st os.FileInfo) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return ""
	}
	dir := filepath.Dir(abs)
	var runs []string
	for d := dir; ; d = filepath.Dir(d) {
		runs = append(runs, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				runs = append(runs, filepath.Join(dir, e.Name()))
			}
		}
	}
	if up := filepath.Dir(dir); up != filepath.Dir(up) {
		ents, _ := os.ReadDir(up)
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			sub, _ := os.ReadDir(filepath.Join(up, e.Name()))
			for _, f := range sub {
				if f.IsDir() {
					runs = append(runs, filepath.Join(up, e.Name(), f.Name()))
				}
			}
		}
	}
	for _, run := range runs {
		b, err := os.ReadFile(filepath.Join(run, localrun.ManifestFile))
		if err != nil {
			continue
		}
		var m localrun.Manifest
		if json.Unmarshal(b, &m) != nil || m.Init == "" {
			continue
		}
		init := m.Init
		if !filepath.IsAbs(init) {
			init = filepath.Join(run, init)
		}
		if ist, err := os.Stat(init); err == nil && os.SameFile(st, ist) {
			return run
		}
	}
	return ""
}

// insideDir reports whether one of path's enclosing folders is the folder dir.
func insideDir(path string, dir os.FileInfo) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && os.SameFile(st, dir) {
			return true
		}
		if d == filepath.Dir(d) {
			return false
		}
	}
}

// checkOutsideImageFolder refuses an output (flag, path; "" for none) inside dir, an image
// folder, which dataset.Open reads recursively: the PNGs written there (what) would become images
// of the dataset, and every later read of it would fail ("mixed image sizes") or, worse, train
// on them. One line naming the flag, the path and the folder; callers exit with status 2.
func checkOutsideImageFolder(flag, path, dir, what string) error {
	if path == "" {
		return nil
	}
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() || !insideDir(path, st) {
		return nil
	}
	return fmt.Errorf("%s %s is inside the image folder %s, which is read recursively: %s would become images of the dataset; give a path outside it", flag, path, dir, what)
}

// checkOutputs applies checkOutPath to each output and refuses two outputs that name the same
// file (which one would silently replace the other). The error has exit status 2.
func checkOutputs(force bool, outs []outFile, inputs ...inputFile) error {
	for i, o := range outs {
		if err := checkOutPath(o.flag, o.path, force, inputs...); err != nil {
			return withExit(exitUsage, err)
		}
		for _, p := range outs[:i] {
			if o.path != "" && p.path != "" && samePath(o.path, p.path) {
				return withExit(exitUsage, fmt.Errorf("%s %s and %s %s are the same file", p.flag, p.path, o.flag, o.path))
			}
		}
	}
	return nil
}

// checkPNGNames refuses an image output whose name does not end in .png (any case): the file
// is PNG whatever its name, and a grid.jpg holding PNG bytes misleads every program that opens
// it by its extension.
func checkPNGNames(outs ...outFile) error {
	for _, o := range outs {
		if o.path != "" && !strings.EqualFold(filepath.Ext(o.path), ".png") {
			return withExit(exitUsage, fmt.Errorf("%s %s: the image is written as PNG; give it a .png name", o.flag, o.path))
		}
	}
	return nil
}

// samePath reports whether a and b name one file: the same existing file, or (not existing
// yet) the same cleaned absolute path.
func samePath(a, b string) bool {
	sa, ea := os.Stat(a)
	sb, eb := os.Stat(b)
	if ea == nil && eb == nil {
		return os.SameFile(sa, sb)
	}
	aa, ea := filepath.Abs(a)
	ab, eb := filepath.Abs(b)
	return ea == nil && eb == nil && aa == ab
}

// checkGridCount refuses n images of h x w pixels for one PNG grid when they are more than
// viz.MaxGridTiles(h, w) (2^28 image pixels: 262144 images of 32x32, 4096 of 256x256), before
// any of them is sampled: beyond that the samples, the grid and its encoder run out of memory.
// flag names the count on the command line ("--n", "--samples"). The error, one line, has exit
// status 2:
//
//	--n 10000000: at most 262144 images of 32x32 fit one grid (2^28 pixels)
func checkGridCount(flag string, n, h, w int) error {
	if most := viz.MaxGridTiles(h, w); n > most {
		return withExit(exitUsage, fmt.Errorf("%s %d: at most %d images of %dx%d fit one grid (2^28 pixels)", flag, n, most, h, w))
	}
	return nil
}

// isTerminal reports whether w is a terminal (a variable so that tests can pretend).
var isTerminal = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressLine is the one-line progress report of a long command on stderr. On a terminal it
// rewrites one line in place (at most every 200 ms, and at every final report) and End finishes
// it with a newline, so that what follows (the summary, the shell prompt) starts on a line of
// its own. Elsewhere (a log file, a pipe) reports are lines of their own: one per every at most,
// or with every = 0 the final reports only.
type progressLine struct {
	w     io.Writer
	term  bool
	every time.Duration
	last  time.Time // of the last line drawn or printed (at first: when the work began)
	width int       // length of the line on the terminal, to blank what a shorter one leaves
	open  bool      // a line without its newline is on the terminal
}

func newProgressLine(w io.Writer, every time.Duration) *progressLine {
	return &progressLine{w: w, term: isTerminal(w), every: every, last: time.Now()}
}

// Report shows the progress text. final marks the report of a finished piece of work (a
// batch), which a terminal always shows.
func (p *progressLine) Report(final bool, format string, args ...any) {
	now := time.Now()
	switch {
	case p.term && !final && p.open && now.Sub(p.last) < 200*time.Millisecond:
		return
	case !p.term && p.every == 0 && !final:
		return
	case !p.term && p.every > 0 && now.Sub(p.last) < p.every:
		return
	}
	p.last = now
	s := fmt.Sprintf(format, args...)
	if !p.term {
		fmt.Fprintln(p.w, s)
		return
	}
	fmt.Fprintf(p.w, "\r%s%s", s, strings.Repeat(" ", max(0, p.width-len(s))))
	p.width = len(s)
	p.open = true
}

// End finishes the line on the terminal with a newline (when one is open); call it when the
// work is done or interrupted, before anything else is printed.
func (p *progressLine) End() {
	if p.open {
		fmt.Fprintln(p.w)
		p.open = false
		p.width = 0
	}
}

// interruption is what a progress callback panics with to leave the reverse process when the
// command's context is done (SIGINT, SIGTERM); the command recovers it into an error.
type interruption struct{ t int }

// stepFlag is the value of a --step flag whose default, -1, means "none given" (all steps, the
// newest verified one, or required): its help shows no "(default -1)" beside the usage text that
// says what no --step means, since pflag omits a default whose text is empty.
type stepFlag struct{ p *int64 }

// addStepFlag registers --step on fs, bound to p (set to -1 when the flag is not given).
func addStepFlag(fs *pflag.FlagSet, p *int64, usage string) {
	*p = -1
	fs.Var(stepFlag{p}, "step", usage)
}

func (s stepFlag) String() string {
	if s.p == nil || *s.p < 0 {
		return ""
	}
	return strconv.FormatInt(*s.p, 10)
}

func (s stepFlag) Set(v string) error {
	if v == "" { // the default (pflag resets a flag to its default text)
		*s.p = -1
		return nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return errors.New("want a whole number of steps")
	}
	if n < 0 {
		return errors.New("want a step of 0 or more")
	}
	*s.p = n
	return nil
}

func (s stepFlag) Type() string { return "int" }

// File kinds sniffFile tells apart, in the words of the messages that name them.
const (
	kindEmpty       = "an empty file"
	kindCheckpoint  = "a bbolt checkpoint file"
	kindSafetensors = "a safetensors weights file"
	kindRunConfig   = "a YAML run config"
	kindManifest    = "a ddpm local run manifest"
	kindDataset     = "a dataset file"
	kindImage       = "an image (PNG, JPEG or WebP)"
)

// sniffFile says what the regular file at path holds, from its first bytes (and for a run
// config, its YAML): one of the kind* constants, or "" for anything else (also for a file that
// cannot be read). It reads at most 1 MiB.
func sniffFile(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return ""
	}
	if st.Size() == 0 {
		return kindEmpty
	}
	head := make([]byte, min(st.Size(), 1<<20))
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	switch {
	case sniff.Checkpoint(head):
		return kindCheckpoint
	case sniff.Safetensors(head):
		return kindSafetensors
	case len(head) >= 8 && string(head[:8]) == "DDPMSHD1": // a prepared dataset's shard
		return kindDataset
	case len(head) >= 4 && head[0] == 0 && head[1] == 0 && head[2] == 8 && (head[3] == 1 || head[3] == 3): // idx
		return kindDataset
	case sniff.Image(head):
		return kindImage
	}
	base := filepath.Base(path)
	if base == "local.json" {
		return kindManifest
	}
	if base == "index.json" && strings.Contains(string(head), `"ddpm-prepared"`) {
		return kindDataset
	}
	if int64(n) == st.Size() && utf8.Valid(head) {
		if r, err := config.Parse(head); err == nil && (r.Model != "" || r.Preset != "") {
			return kindRunConfig
		}
	}
	return ""
}

// runInputKinds are the kinds of file a run reads (its config, checkpoints, manifest, data):
// checkOutPath never replaces one, --force or not.
var runInputKinds = map[string]bool{kindCheckpoint: true, kindRunConfig: true, kindManifest: true, kindDataset: true}

// checkOutNames refuses an output whose name does not end in ext (".csv", ".safetensors"; any
// case): what the file holds, desc ("CSV"), is fixed whatever its name. Exit status 2:
//
//	--csv runs/a/run.yaml: the loss history is written as CSV; give it a .csv name
func checkOutNames(ext, what string, outs ...outFile) error {
	for _, o := range outs {
		if o.path != "" && !strings.EqualFold(filepath.Ext(o.path), ext) {
			return withExit(exitUsage, fmt.Errorf("%s %s: %s; give it a %s name", o.flag, o.path, what, ext))
		}
	}
	return nil
}

// checkCheckpointKind refuses, in one line with exit status 2, a file given where a checkpoint
// file (checkpoints.db) is expected that sniffFile recognizes as something else, naming what it
// is and which flag takes it; flag ("--checkpoint", or "" for a positional FILE) prefixes the
// line:
//
//	--checkpoint w.safetensors is a safetensors weights file, not a checkpoint file (checkpoints.db); --init of ddpm local and ddpm trainer takes weights
//
// A text file (isTextFile: a CSV, a log) is refused as one. A folder, a missing file and anything
// unrecognized pass (the checkpoint package names them).
func checkCheckpointKind(flag, path string) error {
	what := strings.TrimSpace(flag + " " + path)
	switch kind := sniffFile(path); kind {
	case kindSafetensors:
		return withExit(exitUsage, fmt.Errorf("%s is %s, not a checkpoint file (checkpoints.db); --init of ddpm local and ddpm trainer takes weights", what, kind))
	case kindRunConfig, kindManifest:
		return withExit(exitUsage, fmt.Errorf("%s is %s, not a checkpoint file; give the checkpoints.db of its run (or the run's folder)", what, kind))
	case kindDataset, kindImage:
		return withExit(exitUsage, fmt.Errorf("%s is %s, not a checkpoint file (checkpoints.db)", what, kind))
	case "":
		if isTextFile(path) {
			return withExit(exitUsage, fmt.Errorf("%s is a text file, not a checkpoint file (checkpoints.db)", what))
		}
	}
	return nil
}

// isTextFile reports whether the regular file at path begins as text: its first 64 KiB are
// UTF-8 without a NUL byte (a CSV such as a run's loss.csv, a log, a note). No bbolt file is
// (its first page header holds zero bytes), nor one whose pages were zeroed. A file that cannot be read is
// no text file.
func isTextFile(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
		return false
	}
	head := make([]byte, 64<<10)
	n, _ := io.ReadFull(f, head)
	return sniff.Text(head[:n], n == cap(head))
}

// checkWeightsKind refuses, in one line with exit status 2, a file given to flag (--init) that
// holds no safetensors weights but something sniffFile recognizes, naming what it is:
//
//	--init c.db is a bbolt checkpoint file, not safetensors weights; write its weights with: ddpm checkpoint export c.db --ema --out W.safetensors
//
// A folder is refused too: one of ddpm's own (a run folder, a trainer's folder) with the export
// command that writes its weights, any other as a folder:
//
//	--init runs/a is a ddpm local run folder, not safetensors weights; write its weights with: ddpm checkpoint export runs/a --ema --out W.safetensors
//
// A text file is refused as one. A safetensors file, a missing file and anything unrecognized
// pass (the reader names them).
func checkWeightsKind(flag, path string) error {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		if kind := localrun.FolderKind(path); kind != "" {
			return withExit(exitUsage, fmt.Errorf("%s %s is %s, not safetensors weights; write its weights with: ddpm checkpoint export %s --ema --out W.safetensors", flag, path, kind, shellWord(path)))
		}
		return withExit(exitUsage, fmt.Errorf("%s %s is a folder, not safetensors weights (a .safetensors file, as ddpm checkpoint export writes)", flag, path))
	}
	switch kind := sniffFile(path); kind {
	case "":
		if isTextFile(path) {
			// It was the safetensors reader's "malformed header: header length 83179... exceeds the limit".
			return withExit(exitUsage, fmt.Errorf("%s %s is a text file, not safetensors weights", flag, path))
		}
		return nil
	case kindSafetensors:
		return nil
	case kindCheckpoint:
		return withExit(exitUsage, fmt.Errorf("%s %s is %s, not safetensors weights; write its weights with: ddpm checkpoint export %s --ema --out W.safetensors", flag, path, kind, shellWord(path)))
	default:
		return withExit(exitUsage, fmt.Errorf("%s %s is %s, not safetensors weights", flag, path, kind))
	}
}
