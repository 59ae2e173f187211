package unet

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Errors returned by this package; wrapped with %w and context.
var (
	// ErrConfig: a Config is invalid (Validate) or a preset name is unknown.
	ErrConfig = errors.New("unet: invalid config")
	// ErrWeights: a safetensors file does not hold the model's tensors (missing or extra
	// names, wrong shapes or dtypes).
	ErrWeights = errors.New("unet: weights do not match the model")
)

// Layout selects how the U-Net wires its skip connections.
type Layout string

const (
	// LayoutDDPM is the original models/unet.py: the skip stack holds conv_in's output, every
	// ResBlock (+attention) output and every downsample output; each up level has
	// NumResBlocks+1 ResBlocks, each taking one skip. PyTorch names: DDPMUNet in
	// anchors/pytorch/unet_bench.py (down.i.blocks.j, mid1, up.k.upsample, ...).
	LayoutDDPM Layout = "ddpm"
	// LayoutCompact is the reference small U-Net of anchors/REFERENCE_MODEL.md: one skip per
	// level (the output of its last block, before downsampling) and one ResBlock per up level.
	// It needs NumResBlocks == 1. PyTorch names: SmallUNet (d0_res, mid_res1, u2_up, ...).
	LayoutCompact Layout = "compact"
)

// Config is the architecture of a U-Net. All fields are required; Preset fills them.
type Config struct {
	Layout          Layout
	InCh, OutCh     int     // image channels in and out: 1 (MNIST) or 3 (RGB)
	Resolution      int     // input height = width, divisible by 2^(len(ChMult)-1)
	Ch              int     // base channels; the time embedding is sinusoidal(Ch) -> 4Ch -> 4Ch
	ChMult          []int   // channel multiplier per resolution level
	NumResBlocks    int     // ResBlocks per down level
	AttnResolutions []int   // resolutions (of levels) that get self-attention after each ResBlock
	Dropout         float64 // dropout probability inside every ResBlock, in [0, 1)
	Groups          int     // GroupNorm groups; divides every channel count
	GNEps           float64 // GroupNorm epsilon: 1e-6 in the original (TF), 1e-5 for PyTorch's default
}

// presets: the paper's models (Ho et al. 2020, Appendix B), the project's reference small model,
// and tiny for CPU demos.
var presets = map[string]Config{
	// CIFAR-10: 35,746,307 parameters (the paper says 35.7M).
	"cifar10": {Layout: LayoutDDPM, InCh: 3, OutCh: 3, Resolution: 32, Ch: 128, ChMult: []int{1, 2, 2, 2},
		NumResBlocks: 2, AttnResolutions: []int{16}, Dropout: 0.1, Groups: 32, GNEps: 1e-6},
	// LSUN 256x256 (bedroom, church, cat) and CelebA-HQ: 113,673,219 parameters (the paper: 114M).
	"lsun256": {Layout: LayoutDDPM, InCh: 3, OutCh: 3, Resolution: 256, Ch: 128, ChMult: []int{1, 1, 2, 2, 4, 4},
		NumResBlocks: 2, AttnResolutions: []int{16}, Dropout: 0, Groups: 32, GNEps: 1e-6},
	"celebahq256": {Layout: LayoutDDPM, InCh: 3, OutCh: 3, Resolution: 256, Ch: 128, ChMult: []int{1, 1, 2, 2, 4, 4},
		NumResBlocks: 2, AttnResolutions: []int{16}, Dropout: 0, Groups: 32, GNEps: 1e-6},
	// anchors/REFERENCE_MODEL.md: 828,387 parameters; the speed yardstick against PyTorch.
	"small": {Layout: LayoutCompact, InCh: 3, OutCh: 3, Resolution: 32, Ch: 32, ChMult: []int{1, 2, 2},
		NumResBlocks: 1, AttnResolutions: []int{16}, Dropout: 0.1, Groups: 8, GNEps: 1e-5},
	// tiny: the small model's layout at half the width (Ch 16) on one channel, for MNIST
	// padded to 32x32: 208,305 parameters and about a quarter of small's multiply-adds, so a
	// two-core demo trains a recognizable model in minutes. No dropout: a demo this short
	// does not overfit 60,000 images.
	"tiny": {Layout: LayoutCompact, InCh: 1, OutCh: 1, Resolution: 32, Ch: 16, ChMult: []int{1, 2, 2},
		NumResBlocks: 1, AttnResolutions: []int{16}, Dropout: 0, Groups: 8, GNEps: 1e-5},
}

// PresetNames lists the preset names in sorted order.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Preset returns a copy of the named preset's Config, or an error wrapping ErrConfig that
// lists the known names.
func Preset(name string) (Config, error) {
	c, ok := presets[name]
	if !ok {
		return Config{}, fmt.Errorf("%w: unknown preset %q (known: %s)", ErrConfig, name, strings.Join(PresetNames(), ", "))
	}
	return c.clone(), nil
}

func (c Config) clone() Config {
	c.ChMult = slices.Clone(c.ChMult)
	c.AttnResolutions = slices.Clone(c.AttnResolutions)
	return c
}

// Validate reports the first problem with c as an error wrapping ErrConfig, naming the field.
func (c Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
	}
	switch {
	case c.Layout != LayoutDDPM && c.Layout != LayoutCompact:
		return bad("layout %q (want %q or %q)", c.Layout, LayoutDDPM, LayoutCompact)
	case c.InCh < 1 || c.OutCh < 1:
		return bad("in/out channels %d/%d must be >= 1", c.InCh, c.OutCh)
	case c.Ch < 1:
		return bad("ch %d must be >= 1", c.Ch)
	case len(c.ChMult) == 0:
		return bad("ch_mult is empty")
	case c.NumResBlocks < 1:
		return bad("num_res_blocks %d must be >= 1", c.NumResBlocks)
	case c.Layout == LayoutCompact && c.NumResBlocks != 1:
		return bad("the compact layout has exactly 1 ResBlock per level, not %d", c.NumResBlocks)
	case !(c.Dropout >= 0 && c.Dropout < 1):
		return bad("dropout %g must be in [0, 1)", c.Dropout)
	case c.Groups < 1:
		return bad("groups %d must be >= 1", c.Groups)
	case !(c.GNEps > 0):
		return bad("GroupNorm epsilon %g must be > 0", c.GNEps)
	case c.Ch*4 < 4 || c.Ch < 4:
		return bad("ch %d must be >= 4 (sinusoidal embedding)", c.Ch)
	}
	if c.Ch%c.Groups != 0 {
		return bad("ch %d is not divisible by groups %d", c.Ch, c.Groups)
	}
	for i, m := range c.ChMult {
		if m < 1 || (c.Ch*m)%c.Groups != 0 {
			return bad("ch_mult[%d] = %d: channels %d not a positive multiple of groups %d", i, m, c.Ch*m, c.Groups)
		}
	}
	div := 1 << (len(c.ChMult) - 1)
	if c.Resolution < div || c.Resolution%div != 0 {
		return bad("resolution %d is not a positive multiple of 2^(levels-1) = %d", c.Resolution, div)
	}
	for _, r := range c.AttnResolutions {
		ok := false
		for i := range c.ChMult {
			ok = ok || r == c.Resolution>>i
		}
		if !ok {
			return bad("attention resolution %d is not the resolution of any level", r)
		}
	}
	return nil
}

func (c Config) attnAt(res int) bool { return slices.Contains(c.AttnResolutions, res) }
