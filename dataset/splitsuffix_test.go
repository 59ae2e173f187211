package dataset

import (
	"errors"
	"testing"
)

// TestBuiltinSplitTypo: a built-in dataset with a mistyped split suffix (mnist:tset) is refused
// naming the split and the two that exist, exit status 2; it was "dataset not found: mnist:tset:
// no such file or directory (and not one of mnist, fashion-mnist)", as if the name were wrong.
func TestBuiltinSplitTypo(t *testing.T) {
	for spec, want := range map[string]string{
		"mnist:tset":         `unsupported option: mnist:tset: split "tset" (want mnist:train or mnist:test)`,
		"fashion-mnist:Test": `unsupported option: fashion-mnist:Test: split "Test" (want fashion-mnist:train or fashion-mnist:test)`,
	} {
		if _, err := Open(spec, Options{}); !errors.Is(err, ErrOption) || err.Error() != want {
			t.Errorf("Open(%s): %v, want %s", spec, err, want)
		}
	}
	_, stderr, code := runDDPM(t, "dataset", "inspect", "mnist:tset")
	if want := "ddpm: unsupported option: mnist:tset: split \"tset\" (want mnist:train or mnist:test)\n"; code != 2 || stderr != want {
		t.Errorf("ddpm dataset inspect mnist:tset: exit %d, %q; want exit 2, %q", code, stderr, want)
	}
}
