package config

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestDatasetFlagUsage: the --dataset help of trainer, coordinator and local names every
// built-in set the dataset package opens by name (fashion-mnist was missing beside mnist) and
// the prepared folders that ddpm dataset prepare makes, and says it is the run's dataset (it said
// "dataset spec").
func TestDatasetFlagUsage(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	AddFlags(fs)
	usage := fs.Lookup("dataset").Usage
	// In the field's words (the run's dataset), not the package's "dataset spec".
	for _, want := range []string{"the run's dataset: mnist, fashion-mnist,", "a prepared folder"} {
		if !strings.Contains(usage, want) {
			t.Errorf("--dataset usage %q lacks %q", usage, want)
		}
	}
}
