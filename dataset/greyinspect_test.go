package dataset

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestInspectGreyFolderChannels: ddpm dataset inspect says a greyscale folder is greyscale and
// how each model reads it, and --channels 3 prints the shape and fingerprint a run of a
// 3-channel model pins (the release before 1-channel grey folders printed that fingerprint for
// the folder; see TestGreyFolderForThreeChannelModel); --channels 2 is one line, exit status 2.
func TestInspectGreyFolderChannels(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "grey")
	writeLevels(t, dir, true)

	out, stderr, code := runDDPM(t, "dataset", "inspect", dir)
	if code != 0 {
		t.Fatalf("inspect: exit %d: %s", code, stderr)
	}
	for _, line := range []string{
		"shape        1x8x8 (CHW)\n",
		"greyscale    every image; a 1-channel model reads 1x8x8, a 3-channel model 3x8x8, the grey level in each channel (--channels 3: its fingerprint)\n",
		"fingerprint  sha256:027adcdeb1346f8292477ed289a502384c396f6ea436951b95875136f9db71f5\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("inspect output lacks %q:\n%s", line, out)
		}
	}

	out, stderr, code = runDDPM(t, "dataset", "inspect", dir, "--channels", "3")
	if code != 0 {
		t.Fatalf("inspect --channels 3: exit %d: %s", code, stderr)
	}
	for _, line := range []string{
		"shape        3x8x8 (CHW)\n",
		"greyscale    every image, the grey level in each channel, as a 3-channel model reads it (a 1-channel model: --channels 1)\n",
		"fingerprint  sha256:ad00770087132438cf15eae503e76b55b2beb3878636fc46d5e59c5516639a4c\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("inspect --channels 3 output lacks %q:\n%s", line, out)
		}
	}

	// A colour folder has no greyscale line.
	rgb := filepath.Join(t.TempDir(), "rgb")
	writeColour(t, rgb)
	if out, _, _ := runDDPM(t, "dataset", "inspect", rgb, "--channels", "1"); strings.Contains(out, "greyscale") || !strings.Contains(out, "shape        3x8x8 (CHW)\n") {
		t.Errorf("inspect of an RGB folder with --channels 1:\n%s", out)
	}

	_, stderr, code = runDDPM(t, "dataset", "inspect", dir, "--channels", "2")
	if code != 2 || stderr != "ddpm: --channels 2: want 1 or 3 (or 0, the data's own)\n" {
		t.Errorf("--channels 2: exit %d, stderr %q", code, stderr)
	}
}
