// Package viz writes the run directory's pictures and tables: loss.csv, loss.png (gonum/plot) and
// PNG grids of images in [-1, 1].
//
// Nothing here touches the model or the cluster; callers hand over plain numbers.
package viz

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"ddpm/internal/atomicfile"
)

// Errors returned by this package; each is wrapped with the file it concerns.
var (
	// ErrBadCSV: a loss.csv that is not the header and rows WriteLossCSV writes.
	ErrBadCSV = errors.New("viz: malformed loss csv")
	// ErrNoPoints: a loss plot was asked for with no points to draw.
	ErrNoPoints = errors.New("viz: no loss points")
)

// LossPoint is one optimizer step's global training loss (L_simple averaged over the global
// batch, eq. 14) with the learning rate and gradient norm (before clipping) of that step.
type LossPoint struct {
	Step     int64
	Loss     float64
	LR       float64
	GradNorm float64
}

var csvHeader = []string{"step", "loss", "lr", "grad_norm"}

// WriteLossCSV writes points to path as CSV with the header step,loss,lr,grad_norm, atomically
// (a temporary file renamed over path), so a reader never sees half a file.
func WriteLossCSV(path string, points []LossPoint) error {
	return writeAtomic(path, func(w io.Writer) error {
		cw := csv.NewWriter(w)
		if err := cw.Write(csvHeader); err != nil {
			return err
		}
		for _, p := range points {
			if err := cw.Write(lossRecord(p)); err != nil {
				return err
			}
		}
		cw.Flush()
		return cw.Error()
	})
}

func lossRecord(p LossPoint) []string {
	return []string{
		strconv.FormatInt(p.Step, 10),
		strconv.FormatFloat(p.Loss, 'g', -1, 64),
		strconv.FormatFloat(p.LR, 'g', -1, 64),
		strconv.FormatFloat(p.GradNorm, 'g', -1, 64),
	}
}

// LossCSVRow is p as one row of WriteLossCSV's file, newline included, for appending to such a
// file as points arrive (ReadLossCSV reads the rows in any order; a caller keeps the last one of
// a step).
func LossCSVRow(p LossPoint) []byte {
	var b strings.Builder
	cw := csv.NewWriter(&b)
	_ = cw.Write(lossRecord(p)) // a strings.Builder does not fail
	cw.Flush()
	return []byte(b.String())
}

// ReadLossCSV reads a file written by WriteLossCSV (and appended to with LossCSVRow). A last
// row cut short, one without its newline that does not parse (an append interrupted by a kill
// or a crash leaves it), is left out. A missing file is returned as the os error
// (errors.Is(err, fs.ErrNotExist)); anything else malformed is ErrBadCSV naming the line.
func ReadLossCSV(path string) ([]LossPoint, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if n := len(data); n > 0 && data[n-1] != '\n' {
		cut := bytes.LastIndexByte(data, '\n') + 1
		if cut > 0 && !isLossRow(data[cut:]) {
			data = data[:cut]
		}
	}
	recs, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadCSV, path, err)
	}
	if len(recs) == 0 || len(recs[0]) != len(csvHeader) || recs[0][0] != csvHeader[0] {
		return nil, fmt.Errorf("%w: %s: missing header %v", ErrBadCSV, path, csvHeader)
	}
	out := make([]LossPoint, 0, len(recs)-1)
	for i, r := range recs[1:] {
		var p LossPoint
		var errs [4]error
		p.Step, errs[0] = strconv.ParseInt(r[0], 10, 64)
		p.Loss, errs[1] = strconv.ParseFloat(r[1], 64)
		p.LR, errs[2] = strconv.ParseFloat(r[2], 64)
		p.GradNorm, errs[3] = strconv.ParseFloat(r[3], 64)
		if e := errors.Join(errs[:]...); e != nil {
			return nil, fmt.Errorf("%w: %s line %d: %v", ErrBadCSV, path, i+2, e)
		}
		out = append(out, p)
	}
	return out, nil
}

// isLossRow reports whether line is one whole row of step,loss,lr,grad_norm numbers.
func isLossRow(line []byte) bool {
	f := strings.Split(string(line), ",")
	if len(f) != len(csvHeader) {
		return false
	}
	if _, err := strconv.ParseInt(f[0], 10, 64); err != nil {
		return false
	}
	for _, v := range f[1:] {
		if _, err := strconv.ParseFloat(v, 64); err != nil {
			return false
		}
	}
	return true
}

// Smooth returns the exponential moving average of ys with the given weight in [0, 1)
// (TensorBoard's smoothing: s_i = w*s_{i-1} + (1-w)*y_i, debiased so the first value is y_0).
// It panics if weight is outside [0, 1).
func Smooth(ys []float64, weight float64) []float64 {
	if weight < 0 || weight >= 1 {
		panic(fmt.Sprintf("viz: smoothing weight %v outside [0, 1)", weight))
	}
	out := make([]float64, len(ys))
	var acc, norm float64
	for i, y := range ys {
		acc = weight*acc + (1-weight)*y
		norm = weight*norm + (1 - weight)
		out[i] = acc / norm
	}
	return out
}

// WriteLossPNG draws the loss curve (raw in light grey, smoothed in blue)
// and writes it to path as a PNG of 8x5 inches. The loss axis is logarithmic when the losses
// span more than a decade. Non-finite and non-positive losses are left out
// of the curve (a log axis cannot show them). It returns ErrNoPoints when nothing is drawable.
func WriteLossPNG(path string, points []LossPoint, title string) error {
	raw := make(plotter.XYs, 0, len(points))
	for _, p := range points {
		if p.Loss > 0 && !math.IsInf(p.Loss, 0) && !math.IsNaN(p.Loss) {
			raw = append(raw, plotter.XY{X: float64(p.Step), Y: p.Loss})
		}
	}
	if len(raw) == 0 {
		return fmt.Errorf("%w: %s", ErrNoPoints, path)
	}
	ys := make([]float64, len(raw))
	for i := range raw {
		ys[i] = raw[i].Y
	}
	sm := Smooth(ys, smoothingFor(len(raw)))
	smooth := make(plotter.XYs, len(raw))
	for i := range raw {
		smooth[i] = plotter.XY{X: raw[i].X, Y: sm[i]}
	}

	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = "L_simple (global batch mean)"
	lo, hi := math.Inf(1), 0.0
	for _, xy := range raw {
		lo, hi = math.Min(lo, xy.Y), math.Max(hi, xy.Y)
	}
	p.X.Tick.Marker = niceTicks{}
	p.Y.Tick.Marker = niceTicks{}
	if hi > 10*lo {
		// A run from scratch falls by orders of magnitude; log ticks need a decade to show.
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	p.Add(plotter.NewGrid())
	lr, err := plotter.NewLine(raw)
	if err != nil {
		return err
	}
	lr.Color = color.Gray{Y: 180}
	ls, err := plotter.NewLine(smooth)
	if err != nil {
		return err
	}
	ls.Color = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	ls.Width = vg.Points(1.5)
	p.Add(lr, ls)
	p.Legend.Add("per step", lr)
	p.Legend.Add("smoothed", ls)
	p.Legend.Top = true
	p.Legend.XOffs = -vg.Points(12) // clear of the right edge
	p.Legend.YOffs = -vg.Points(4)

	wt, err := p.WriterTo(8*vg.Inch, 5*vg.Inch, "png")
	if err != nil {
		return err
	}
	return writeAtomic(path, func(w io.Writer) error { _, err := wt.WriteTo(w); return err })
}

// niceTicks labels every tick of a linear axis: 4 to 10 of them at multiples of 1, 2 or 5 times
// a power of ten, each written with as many decimals as that step needs (gonum's default labels
// every other tick and can round neighbours to the same text, e.g. 1.005 and 1.01 as "1").
type niceTicks struct{}

func (niceTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(hi > lo) || math.IsInf(hi-lo, 0) {
		return []plot.Tick{{Value: lo, Label: strconv.FormatFloat(lo, 'g', 4, 64)}}
	}
	mag := math.Pow(10, math.Floor(math.Log10(hi-lo)))
	step := mag
	for _, m := range []float64{0.1, 0.2, 0.5, 1, 2, 5} {
		if (hi-lo)/(m*mag) <= 10 {
			step = m * mag
			break
		}
	}
	decimals := max(0, int(-math.Floor(math.Log10(step)+1e-9)))
	var ticks []plot.Tick
	for k := math.Ceil(lo / step); k*step <= hi+step*1e-9; k++ {
		v := k * step
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', decimals, 64)})
	}
	return ticks
}

// smoothingFor picks a smoothing weight that spans about 2% of the run, within [0, 0.98].
func smoothingFor(n int) float64 {
	w := 1 - 50/float64(n)
	return math.Max(0, math.Min(0.98, w))
}

// ToUint8 maps a value in [-1, 1] to 8 bits as the original sampling code does:
// round((x + 1) * 127.5) clamped to [0, 255]. NaN maps to 0.
func ToUint8(x float32) uint8 {
	v := math.Round((float64(x) + 1) * 127.5)
	switch {
	case !(v >= 0): // also NaN
		return 0
	case v > 255:
		return 255
	}
	return uint8(v)
}

// MaxGridPixels bounds the image pixels one grid (Grid) may hold, padding not counted: 2^28,
// a 16384 x 16384 picture whose RGBA buffer is 1 GiB. More than that is no longer a picture anyone
// looks at, and the buffers behind it (the samples, the RGBA image, the PNG encoder) grow past
// what a workstation holds.
const MaxGridPixels = 1 << 28

// MaxGridTiles is the number of h x w images one grid may hold: MaxGridPixels / (h*w) (262144
// of 32x32, 4096 of 256x256; 0 when one image alone is larger). It panics if h or w is not
// positive.
func MaxGridTiles(h, w int) int {
	if h <= 0 || w <= 0 {
		panic(fmt.Sprintf("viz: MaxGridTiles of %dx%d images", h, w))
	}
	if h > MaxGridPixels || w > MaxGridPixels/h {
		return 0
	}
	return MaxGridPixels / (h * w)
}

// Grid tiles n images, NCHW float32 in [-1, 1] (len(x) == n*c*h*w, c is 1 or 3), into an image
// of cols columns and ceil(n/cols) rows, with pad pixels of white between tiles and at the edges.
// One channel gives a grey image, three an RGB one. It panics if the shapes disagree.
func Grid(x []float32, n, c, h, w, cols, pad int) image.Image {
	if n <= 0 || h <= 0 || w <= 0 || cols <= 0 || pad < 0 || (c != 1 && c != 3) || len(x) != n*c*h*w {
		panic(fmt.Sprintf("viz: Grid of n=%d c=%d h=%d w=%d cols=%d pad=%d with len(x)=%d", n, c, h, w, cols, pad, len(x)))
	}
	cols = min(cols, n)
	rows := (n + cols - 1) / cols
	W, H := cols*(w+pad)+pad, rows*(h+pad)+pad
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	plane := h * w
	for k := 0; k < n; k++ {
		ox, oy := pad+(k%cols)*(w+pad), pad+(k/cols)*(h+pad)
		base := k * c * plane
		for y := 0; y < h; y++ {
			for xx := 0; xx < w; xx++ {
				o := img.PixOffset(ox+xx, oy+y)
				if c == 1 {
					v := ToUint8(x[base+y*w+xx])
					img.Pix[o], img.Pix[o+1], img.Pix[o+2] = v, v, v
				} else {
					img.Pix[o] = ToUint8(x[base+y*w+xx])
					img.Pix[o+1] = ToUint8(x[base+plane+y*w+xx])
					img.Pix[o+2] = ToUint8(x[base+2*plane+y*w+xx])
				}
			}
		}
	}
	return img
}

// WritePNG encodes img to path atomically.
func WritePNG(path string, img image.Image) error {
	return writeAtomic(path, func(w io.Writer) error { return png.Encode(w, img) })
}

// writeAtomic writes through fill to path with atomicfile (synced, renamed into place, the
// directory synced; on any error path is left as it was and no temporary file stays). The file
// gets mode 0666 less the umask (0644 usually), as any file a user shares: these are no secrets.
// fill's error (an encoder's, or a write's) comes back as "viz: writing PATH: ERR"; the others
// are atomicfile's, naming path.
func writeAtomic(path string, fill func(io.Writer) error) error {
	return atomicfile.Write(path, 0o666, atomicfile.Replace, func(w io.Writer) error {
		if err := fill(w); err != nil {
			return fmt.Errorf("viz: writing %s: %w", path, err)
		}
		return nil
	})
}
