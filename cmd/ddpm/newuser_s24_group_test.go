package main

import "testing"

// TestNewUserS24GroupTypoWithFlags: a mistyped subcommand given with its flags (ddpm eval bdp
// --checkpoint X) is named as the unknown command, with the near names, exit status 2; the group
// parsed the flags first and said "eval: unknown flag: --checkpoint". An unknown flag of the
// group itself is still named as one.
func TestNewUserS24GroupTypoWithFlags(t *testing.T) {
	nuWant(t, 2, `ddpm: eval: unknown command "bdp"; did you mean bpd? (see ddpm eval --help)`, "eval", "bdp", "--checkpoint", "x")
	nuWant(t, 2, `ddpm: checkpoint: unknown command "lsit"; did you mean list? (see ddpm checkpoint --help)`, "checkpoint", "lsit", "x", "--step", "3")
	nuWant(t, 2, `ddpm: dataset: unknown command "inspct"; did you mean inspect? (see ddpm dataset --help)`, "dataset", "inspct", "mnist", "--split", "test")
	nuWant(t, 2, `ddpm: checkpoint: unknown flag: --bogus (see ddpm checkpoint --help)`, "checkpoint", "--bogus")
}
