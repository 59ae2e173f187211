package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

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
		if err := flagTakenAsValue(cmd); err != nil {
			return err
		}
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

// flagTakenAsValue refuses, exit status 2, a command line in which a flag's value was left out
// and the flag after it became the value: pflag gives a string flag the next argument whatever
// it is, so "ddpm local --out --quiet" made a run folder named --quiet and trained into it. A
// value that is one of the command's own flags (--NAME, --NAME=V, -X) is taken for that:
//
//	local: --out --quiet: --out needs a value (--quiet is a flag of ddpm local)
func flagTakenAsValue(cmd *cobra.Command) error {
	var bad error
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if bad != nil {
			return
		}
		var vals []string
		switch v := f.Value.(type) {
		case pflag.SliceValue:
			vals = v.GetSlice()
		default:
			if f.Value.Type() != "string" {
				return
			}
			vals = []string{f.Value.String()}
		}
		for _, v := range vals {
			var other *pflag.Flag
			switch {
			case strings.HasPrefix(v, "--"):
				other = cmd.Flags().Lookup(strings.SplitN(v[2:], "=", 2)[0])
			case len(v) == 2 && v[0] == '-':
				other = cmd.Flags().ShorthandLookup(v[1:])
			}
			if other != nil {
				bad = withExit(2, fmt.Errorf("%s: --%s %s: --%s needs a value (%s is a flag of %s)", commandName(cmd), f.Name, v, f.Name, v, cmd.CommandPath()))
				return
			}
		}
	})
	return bad
}
