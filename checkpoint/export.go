package checkpoint

import (
	"fmt"
	"strconv"

	"ddpm/internal/safetensors"
)

// Export writes c's EMA weights (ema true) or its parameters (ema false) to path as a
// safetensors file: one F32 tensor per entry of c.Tensors, with the reference PyTorch model's
// state_dict name and shape, in c.Tensors order, loadable by anchors/pytorch/parity.py and
// by safetensors.torch.load_file. The metadata records format "pt", the step, model (c.Preset,
// the U-Net preset), weights ("ema" or "params") and config hash, as ddpm sample
// --export-weights does, and the state hash (StateHash, the STATE column of ddpm checkpoint
// list) rather than c.SHA256, which also covers the generation: the same state written by an
// interrupted-and-resumed run and by the same run uninterrupted exports to the same bytes, so
// `cmp` of two exports agrees with their STATE. The write is atomic (temporary file, fsync,
// rename): on error path is left as it was. ErrNotFound when ema is asked but c has no EMA
// arena; ErrCorruptCheckpoint when c has no tensor index.
func Export(path string, c *Checkpoint, ema bool) error {
	w, which := c.Params, "params"
	if ema {
		w, which = c.EMA, "ema"
		if len(w) == 0 {
			return fmt.Errorf("checkpoint: step %d has no EMA weights: %w", c.Step, ErrNotFound)
		}
	}
	if len(c.Tensors) == 0 {
		return fmt.Errorf("checkpoint: step %d has no tensor index to name the weights: %w", c.Step, ErrCorruptCheckpoint)
	}
	ts := make([]safetensors.Tensor, len(c.Tensors))
	for i, t := range c.Tensors {
		if t.Offset < 0 || t.Offset+t.Len > len(w) {
			return fmt.Errorf("checkpoint: step %d: tensor %s [%d, %d) outside %d %s: %w", c.Step, t.Name, t.Offset, t.Offset+t.Len, len(w), which, ErrCorruptCheckpoint)
		}
		ts[i] = safetensors.F32(t.Name, t.Shape, w[t.Offset:t.Offset+t.Len])
	}
	meta := map[string]string{
		"format":      "pt",
		"step":        strconv.FormatInt(c.Step, 10),
		"model":       c.Preset,
		"weights":     which,
		"state":       StateHash(c),
		"config_hash": c.ConfigHash,
	}
	if err := safetensors.Write(path, ts, meta); err != nil {
		return fmt.Errorf("checkpoint: export step %d: %w", c.Step, err)
	}
	return nil
}
