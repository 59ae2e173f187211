package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

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

// checkOutPath: an output file (empty: none) must not be a directory, must not be (or lie in a
// folder that is) one of the command's inputs, must not exist unless force (nothing is
// overwritten by accident), and its folder must exist. The error is one line naming the flag
// and the path (and the input it would overwrite); callers exit with status 2.
func checkOutPath(flag, path string, force bool, inputs ...inputFile) error {
	if path == "" {
		return nil
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
