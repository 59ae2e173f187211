package main

import (
	"path/filepath"
	"testing"

	"ddpm/internal/testutil"
)

// TestNewUserS26StandaloneClusterFlags: ddpm trainer --standalone given a cluster trainer's flag
// (--coordinator, --listen, --advertise, --http-addr) is refused in one line naming it, exit 2,
// before its --data-dir is made. It trained alone without a word: the coordinators were never
// asked, and nothing listened at --listen or --http-addr.
func TestNewUserS26StandaloneClusterFlags(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	for _, tc := range []struct{ flag, value string }{
		{"coordinator", "127.0.0.1:7001"},
		{"listen", "127.0.0.1:7100"},
		{"advertise", "t0.example:7100"},
		{"http-addr", "127.0.0.1:9090"},
	} {
		vol := filepath.Join(t.TempDir(), "vol")
		want := "ddpm: --" + tc.flag + " is for a cluster trainer: a standalone trainer (--standalone) trains alone, with no coordinator, ring or HTTP port; drop --" +
			tc.flag + ", or --standalone to join a cluster\n"
		runRefused(t, bin, 2, want, "trainer", "--standalone", "--preset", "mnist", "--steps", "2", "--checkpoint-every", "1",
			"--global-batch", "4", "--data-dir", vol, "--"+tc.flag, tc.value)
		mustNotExist(t, vol)
	}
}
