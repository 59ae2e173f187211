package main

import (
	"encoding/json"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envCheckFlags names the environment variable that turns every subcommand into a dry run of its
// command line: with DDPM_CHECK_FLAGS=1 the binary parses the flags and positional arguments
// with the subcommand's real parser, prints them as one JSON object on stdout and exits 0
// without starting anything. A command line that does not parse fails exactly as it would
// otherwise. The Kubernetes manifests' tests (deploy/k8s) check their container args this way.
const envCheckFlags = "DDPM_CHECK_FLAGS"

// checkedFlags is the JSON document DDPM_CHECK_FLAGS=1 prints.
type checkedFlags struct {
	Command string            `json:"command"` // e.g. "ddpm coordinator"
	Args    []string          `json:"args"`    // positional arguments after parsing
	Flags   map[string]string `json:"flags"`   // every flag of the command, set or not, as its value's String()
	Set     []string          `json:"set"`     // the flags the command line set, in name order
}

func init() {
	rootCmd.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if os.Getenv(envCheckFlags) != "1" {
			return nil
		}
		doc := checkedFlags{Command: cmd.CommandPath(), Args: append([]string{}, args...), Flags: map[string]string{}, Set: []string{}}
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			doc.Flags[f.Name] = f.Value.String()
			if f.Changed {
				doc.Set = append(doc.Set, f.Name)
			}
		})
		enc := json.NewEncoder(cmd.OutOrStdout())
		if err := enc.Encode(doc); err != nil {
			return withExit(1, err)
		}
		os.Exit(0)
		return nil
	}
}
