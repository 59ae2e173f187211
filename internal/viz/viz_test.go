package viz

import (
	"errors"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestToUint8MatchesTheOriginal(t *testing.T) {
	// The conversion of the original code: round((x+1)*127.5) clamped to [0, 255].
	in := []float32{-1, -0.996, 0, 0.999, 1.0029, -3, float32(math.NaN())}
	want := []uint8{0, 1, 128, 255, 255, 0, 0}
	for i, x := range in {
		if got := ToUint8(x); got != want[i] {
			t.Errorf("ToUint8(%v) = %d, want %d", x, got, want[i])
		}
	}
}

func TestGridPlacesTilesExactly(t *testing.T) {
	// 3 grey 2x2 images in 2 columns with 1 pixel of padding: 2*(2+1)+1 = 7 wide, 7 high.
	x := []float32{-1, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1}
	img := Grid(x, 3, 1, 2, 2, 2, 1)
	if b := img.Bounds(); b.Dx() != 7 || b.Dy() != 7 {
		t.Fatalf("grid is %v, want 7x7", b)
	}
	at := func(x, y int) uint32 { r, _, _, _ := img.At(x, y).RGBA(); return r >> 8 }
	for _, c := range []struct {
		x, y int
		want uint32
	}{
		{0, 0, 255}, {1, 1, 0}, {2, 2, 0}, {4, 1, 128}, {5, 2, 128}, {1, 4, 255}, {2, 5, 255}, {4, 4, 255}, {3, 1, 255},
	} {
		if got := at(c.x, c.y); got != c.want {
			t.Errorf("pixel (%d,%d) = %d, want %d", c.x, c.y, got, c.want)
		}
	}
	// RGB: the planes land in R, G, B.
	rgb := Grid([]float32{1, -1, 0}, 1, 3, 1, 1, 1, 0)
	r, g, b, _ := rgb.At(0, 0).RGBA()
	if r>>8 != 255 || g>>8 != 0 || b>>8 != 128 {
		t.Errorf("rgb pixel = %d,%d,%d, want 255,0,128", r>>8, g>>8, b>>8)
	}
}

func TestGridPanicsOnShapeMismatch(t *testing.T) {
	defer func() {
		if r := recover(); r == nil {
			t.Fatal("no panic for len(x) != n*c*h*w")
		}
	}()
	Grid(make([]float32, 5), 1, 1, 2, 2, 1, 0)
}

func TestLossCSVRoundTripAndPNG(t *testing.T) {
	dir := t.TempDir()
	var pts []LossPoint
	for s := int64(1); s <= 300; s++ {
		pts = append(pts, LossPoint{Step: s, Loss: 1 / math.Sqrt(float64(s)), LR: 2e-4 * float64(s) / 300, GradNorm: 0.1 * float64(s)})
	}
	csvPath := filepath.Join(dir, "loss.csv")
	if err := WriteLossCSV(csvPath, pts); err != nil {
		t.Fatal(err)
	}
	got, err := ReadLossCSV(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(pts) {
		t.Fatalf("read %d points, wrote %d", len(got), len(pts))
	}
	for i := range pts {
		if got[i] != pts[i] {
			t.Fatalf("point %d: read %+v, wrote %+v", i, got[i], pts[i])
		}
	}
	pngPath := filepath.Join(dir, "loss.png")
	if err := WriteLossPNG(pngPath, pts, "test"); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Width != 8*96 || cfg.Height != 5*96 { // gonum/plot renders PNG at 96 dpi by default
		t.Errorf("loss.png is %dx%d, want 768x480", cfg.Width, cfg.Height)
	}
	if err := WriteLossPNG(pngPath, []LossPoint{{Step: 1, Loss: math.NaN()}}, ""); !errors.Is(err, ErrNoPoints) {
		t.Errorf("all-NaN plot: err = %v, want ErrNoPoints", err)
	}
	if err := os.WriteFile(csvPath, []byte("step,loss,lr,grad_norm\n1,x,0,0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadLossCSV(csvPath); !errors.Is(err, ErrBadCSV) {
		t.Errorf("bad csv: err = %v, want ErrBadCSV", err)
	}
}

func TestSmoothDebiased(t *testing.T) {
	s := Smooth([]float64{4, 4, 4, 0}, 0.5)
	// debiased EMA of a constant is that constant; then 0.5*4*... : acc=0.5*3.5+0=1.75, norm=0.9375
	want := []float64{4, 4, 4, 1.75 / 0.9375}
	for i := range want {
		if math.Abs(s[i]-want[i]) > 1e-12 {
			t.Errorf("Smooth[%d] = %v, want %v", i, s[i], want[i])
		}
	}
}

// TestNiceTicks: every tick labelled, distinct labels, steps of 1, 2 or 5 times a power of ten.
func TestNiceTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   string
	}{
		{0.985, 1.04, "0.99 1.00 1.01 1.02 1.03 1.04"},
		{1, 8, "1 2 3 4 5 6 7 8"},
		{1, 200, "20 40 60 80 100 120 140 160 180 200"},
		{0.0153, 0.031, "0.016 0.018 0.020 0.022 0.024 0.026 0.028 0.030"},
	} {
		var labels []string
		for _, tk := range (niceTicks{}).Ticks(tc.lo, tc.hi) {
			labels = append(labels, tk.Label)
		}
		if got := strings.Join(labels, " "); got != tc.want {
			t.Errorf("Ticks(%v, %v) = %q, want %q", tc.lo, tc.hi, got, tc.want)
		}
	}
}

// TestMaxGridTiles: 2^28 tile pixels per grid, the figures ddpm sample's --n cap quotes.
func TestMaxGridTiles(t *testing.T) {
	for _, tc := range []struct{ h, w, want int }{
		{32, 32, 262144}, {28, 28, 342392}, {256, 256, 4096}, {1024, 1024, 256},
		{1 << 14, 1 << 14, 1}, {1<<14 + 1, 1 << 14, 0}, {1, 1, 1 << 28}, {1 << 29, 1, 0},
	} {
		if got := MaxGridTiles(tc.h, tc.w); got != tc.want {
			t.Errorf("MaxGridTiles(%d, %d) = %d, want %d", tc.h, tc.w, got, tc.want)
		}
	}
	defer func() {
		if r := recover(); r == nil || r != "viz: MaxGridTiles of 0x32 images" {
			t.Errorf("MaxGridTiles(0, 32): recovered %v", r)
		}
	}()
	MaxGridTiles(0, 32)
}

// TestOutputsFollowUmask: loss.csv, loss.png and image grids are files a user shares: mode 0666
// less the umask (0644 with 022, 0640 with 027), not os.CreateTemp's 0600.
func TestOutputsFollowUmask(t *testing.T) {
	pts := []LossPoint{{Step: 1, Loss: 0.5}, {Step: 2, Loss: 0.25}}
	for _, mask := range []int{0o022, 0o027} {
		old := syscall.Umask(mask)
		dir := t.TempDir()
		csvPath, lossPNG, gridPNG := filepath.Join(dir, "loss.csv"), filepath.Join(dir, "loss.png"), filepath.Join(dir, "samples.png")
		errs := errors.Join(WriteLossCSV(csvPath, pts), WriteLossPNG(lossPNG, pts, "t"),
			WritePNG(gridPNG, Grid(make([]float32, 4), 1, 1, 2, 2, 1, 0)))
		syscall.Umask(old)
		if errs != nil {
			t.Fatal(errs)
		}
		for _, p := range []string{csvPath, lossPNG, gridPNG} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := fi.Mode().Perm(), os.FileMode(0o666&^mask); got != want {
				t.Errorf("umask %03o: %s has mode %v, want %v", mask, filepath.Base(p), got, want)
			}
		}
	}
}

// TestWriteErrorNamesTheFile: a grid written where a directory stands fails with the file's own
// name ("rename DIR/samples.png: file exists"; it used to name the hidden temporary file beside
// it, ".samples.png.tmp1234") and leaves nothing beside the directory.
func TestWriteErrorNamesTheFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "samples.png")
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	err := WritePNG(p, Grid(make([]float32, 4), 1, 1, 2, 2, 1, 0))
	if want := "rename " + p + ": file exists"; err == nil || err.Error() != want {
		t.Fatalf("WritePNG onto a directory: %v, want %q", err, want)
	}
	if es, _ := os.ReadDir(dir); len(es) != 1 {
		t.Fatalf("%d entries in the folder, want the directory alone", len(es))
	}
}
