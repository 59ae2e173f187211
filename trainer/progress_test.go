package trainer

import (
	"bytes"
	"log/slog"
	"math"
	"strings"
	"testing"
)

// TestProgressLineSkippedStep: the per-step line of a step skipped for a non-finite gradient
// (loss NaN, gradient norm +Inf; or a finite loss and gradient norm NaN) is written with the
// values as text and read back by ParseProgress with its step, values and skipped flag. Before,
// slog's JSON handler wrote "!ERROR:json: unsupported value: NaN" for the loss, the line did
// not parse, and ddpm local's loss.csv had no row for the step.
func TestProgressLineSkippedStep(t *testing.T) {
	for _, c := range []struct {
		loss, norm float64
		want       string
	}{
		{math.NaN(), math.Inf(1), `"step":17,"loss":"NaN","lr":0.0002,"grad_norm":"+Inf","skipped":true,`},
		{0.25, math.NaN(), `"step":17,"loss":0.25,"lr":0.0002,"grad_norm":"NaN","skipped":true,`},
		{0.25, 1.5, `"step":17,"loss":0.25,"lr":0.0002,"grad_norm":1.5,"skipped":false,`},
	} {
		var buf bytes.Buffer
		in := Progress{Step: 17, Loss: c.loss, LR: 2e-4, GradNorm: c.norm, Skipped: math.IsNaN(c.loss) || math.IsNaN(c.norm), Generation: 3, World: 2, Rank: 1}
		in.Log(slog.New(slog.NewJSONHandler(&buf, nil)))
		line := bytes.TrimSpace(buf.Bytes())
		if !strings.Contains(string(line), c.want) {
			t.Fatalf("line %s\nwant it to hold %s", line, c.want)
		}
		p, ok := ParseProgress(line)
		same := func(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }
		if !ok || p.Step != 17 || !same(p.Loss, c.loss) || !same(p.GradNorm, c.norm) || p.LR != 2e-4 || p.Skipped != in.Skipped || p.Generation != 3 || p.Rank != 1 || p.World != 2 {
			t.Fatalf("ParseProgress(%s) = %+v, %v; want %+v", line, p, ok, in)
		}
	}
	if _, ok := ParseProgress([]byte(`{"msg":"step","step":17,"loss":"lots"}`)); ok {
		t.Fatal(`ParseProgress took "lots" for a loss`)
	}
}
