// Command ddpm is the single binary of the DDPM training cluster: coordinator, trainer, local
// cluster, sampling, evaluation and tooling are its subcommands. Each subcommand lives in its own
// file of this package and registers itself on rootCmd in an init function.
package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"ddpm/config"
	"ddpm/internal/version"
)

// exitError carries a process exit status through cobra; its message is printed as one line.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withExit wraps err so that main exits with code instead of 1.
func withExit(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

var rootCmd = &cobra.Command{
	Use:   "ddpm",
	Short: "Distributed data-parallel training of Denoising Diffusion Probabilistic Models",
	Long: `ddpm trains the DDPM U-Net (Ho, Jain, Abbeel 2020) across many machines: a raft-replicated
coordinator assigns ranks and shards, trainers exchange gradients by ring all-reduce over gRPC,
and coordinated checkpoints persist in bbolt. One binary plays every role.`,
	SilenceUsage:  true,
	SilenceErrors: true,
}

var versionCmd = &cobra.Command{
	Use:   "version",
	Short: "Print the binary's version",
	Args:  cobra.NoArgs,
	Run: func(cmd *cobra.Command, args []string) {
		fmt.Fprintln(cmd.OutOrStdout(), "ddpm", version.Version)
	},
}

func init() {
	rootCmd.AddCommand(versionCmd)
	// `ddpm --version` too, printing what `ddpm version` prints.
	rootCmd.Version = version.Version
	rootCmd.SetVersionTemplate("ddpm {{.Version}}\n")
}

// usageErrors makes every command's argument-count and flag errors exit with status 2 and name
// the command and its usage line, instead of cobra's bare "accepts 1 arg(s), received 0".
func usageErrors(c *cobra.Command) {
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return withExit(2, fmt.Errorf("%s: %v (usage: %s)", commandName(cmd), err, cmd.UseLine()))
			}
			return nil
		}
	}
	if c.HasSubCommands() && !c.Runnable() {
		// A group command (ddpm checkpoint, ddpm model, ...) or ddpm itself: cobra takes a
		// mistyped subcommand as an argument of the group and prints its help with status 0,
		// so a typo in a script passed silently (ddpm itself printed cobra's five lines of
		// "unknown command", exit 1). Its arguments are checked before anything runs (before
		// DDPM_CHECK_FLAGS's print too): one line, exit 2.
		c.Args = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 && args[0] != "help" {
				return unknownCommand(cmd, args[0])
			}
			return nil
		}
		c.SuggestionsMinimumDistance = 2
		// Runnable now, but its usage stays "ddpm GROUP [command]" only (its subcommands,
		// which inherit the template, keep their usage lines).
		c.SetUsageTemplate(strings.Replace(c.UsageTemplate(), "{{if .Runnable}}", "{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			// ddpm checkpoint help [list]: as ddpm help checkpoint [list]
			sub, rest, err := cmd.Find(args[1:])
			if err != nil || len(rest) > 0 {
				return withExit(2, fmt.Errorf("%s: no help for %q (see %s --help)", commandName(cmd), strings.Join(args[1:], " "), cmd.CommandPath()))
			}
			return sub.Help()
		}
	}
	for _, sub := range c.Commands() {
		usageErrors(sub)
	}
}

// unknownCommand is the exit-2 error of name given to cmd (ddpm or a group command) as a
// subcommand it lacks, with cobra's near names: `checkpoint: unknown command "lst"; did you mean
// list? (see ddpm checkpoint --help)`, and for ddpm itself `unknown command "stauts"; did you
// mean status? (see ddpm --help)`.
func unknownCommand(cmd *cobra.Command, name string) error {
	hint := ""
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		hint = fmt.Sprintf("; did you mean %s?", strings.Join(s, " or "))
	}
	where := ""
	if cmd != rootCmd {
		where = commandName(cmd) + ": "
	}
	return withExit(2, fmt.Errorf("%sunknown command %q%s (see %s --help)", where, name, hint, cmd.CommandPath()))
}

// helpCmd is `ddpm help [COMMAND...]`: the help of ddpm or of the command the names lead to.
// A name no command has is the one line and exit 2 of `ddpm stauts` (`unknown command "stauts";
// did you mean status? (see ddpm --help)`); cobra's own help command printed ddpm's whole help
// with status 0, so `ddpm help stauts` in a script passed.
var helpCmd = &cobra.Command{
	Use:   "help [command]",
	Short: "Help about any command",
	Long:  "help prints the help of ddpm or of the command named (ddpm help checkpoint fetch).",
	// Shell completion offers the subcommands of the command the names so far lead to.
	ValidArgsFunction: func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		c, rest, err := rootCmd.Find(args)
		if err != nil || len(rest) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []cobra.Completion
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
				names = append(names, cobra.CompletionWithDesc(sub.Name(), sub.Short))
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	},
	RunE: func(_ *cobra.Command, args []string) error {
		c := rootCmd
		for _, name := range args {
			if name == "help" && c != rootCmd && c.HasSubCommands() {
				continue // ddpm help checkpoint help: as ddpm checkpoint help, the group's help
			}
			var next *cobra.Command
			for _, sub := range c.Commands() {
				if sub.Name() == name || sub.HasAlias(name) {
					next = sub
					break
				}
			}
			if next == nil && !c.HasSubCommands() {
				return withExit(2, fmt.Errorf("help: %s has no subcommands, %q is none (see ddpm help %s)", commandName(c), name, commandName(c)))
			}
			if next == nil {
				return unknownCommand(c, name)
			}
			c = next
		}
		c.InitDefaultHelpFlag()
		return c.Help()
	},
}

// commandName is the command's path without the binary's name ("checkpoint list").
func commandName(cmd *cobra.Command) string {
	return strings.TrimPrefix(cmd.CommandPath(), rootCmd.Name()+" ")
}

// configureRoot installs the usage-error handling on the command tree (once).
var configureRoot = sync.OnceFunc(func() {
	rootCmd.SetHelpCommand(helpCmd)
	usageErrors(rootCmd)
	rootCmd.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		if cmd.HasSubCommands() && len(cmd.Flags().Args()) > 0 && cmd.Flags().Arg(0) != "help" {
			// ddpm eval bdp --checkpoint X, ddpm stauts RUN --timeout 1s: the group (or ddpm)
			// got the flags of a mistyped subcommand; the mistake is the subcommand's name, not
			// the flag (it was "eval: unknown flag: --checkpoint").
			return unknownCommand(cmd, cmd.Flags().Arg(0))
		}
		if name, problem := flagValueProblem(err); problem != "" {
			var ie *pflag.InvalidValueError
			errors.As(err, &ie)
			err = fmt.Errorf("%s %q: %s", name, ie.GetValue(), problem)
		}
		hint := flagHint(cmd, err)
		if cmd == rootCmd {
			return withExit(2, fmt.Errorf("%v%s (see ddpm --help)", err, hint))
		}
		return withExit(2, fmt.Errorf("%s: %v%s (see %s --help)", commandName(cmd), err, hint, cmd.CommandPath()))
	})
})

// flagValueProblem says in a few words what is wrong with the value of a number, duration or
// true/false flag when err is pflag's refusal of it (*pflag.InvalidValueError straight from
// strconv or time.ParseDuration): "not a whole number", "not a number", "not true or false",
// "not a duration (e.g. 30s, 5m)", or for a value of the right kind too large or too small
// "out of range (at most HI)" or "(at least LO)" with the end of the flag's range it passed (a
// negative value of an unsigned flag: at least 0). name is the flag as "--NAME". For any
// other error, and a flag type of its own (which words its errors itself), problem is "".
// pflag's own text quotes strconv ("strconv.ParseInt: parsing "1O": invalid syntax").
func flagValueProblem(err error) (name, problem string) {
	var ie *pflag.InvalidValueError
	if !errors.As(err, &ie) || ie.GetFlag() == nil {
		return "", ""
	}
	f, value := ie.GetFlag(), ie.GetValue()
	var ne *strconv.NumError
	isNum := errors.As(err, &ne)
	outOfRange := isNum && errors.Is(ne.Err, strconv.ErrRange)
	typ := f.Value.Type()
	switch {
	case typ == "duration":
		if durationSyntax.MatchString(value) { // written as a duration, but past what one holds
			return "--" + f.Name, outside(value, time.Duration(math.MinInt64).String(), time.Duration(math.MaxInt64).String())
		}
		return "--" + f.Name, "not a duration (e.g. 30s, 5m)"
	case !isNum:
		return "", ""
	case typ == "bool":
		return "--" + f.Name, "not true or false"
	case typ == "float64" || typ == "float32":
		if outOfRange {
			limit := math.MaxFloat64
			if typ == "float32" {
				limit = math.MaxFloat32
			}
			return "--" + f.Name, outside(value, fmt.Sprintf("%.2g", -limit), fmt.Sprintf("%.2g", limit))
		}
		return "--" + f.Name, "not a number"
	}
	kind, ok := intFlagTypes[typ]
	if !ok {
		return "", ""
	}
	// A negative whole number for an unsigned flag is out of its range too, though strconv
	// calls it a syntax error.
	_, asInt := strconv.ParseInt(value, 0, 64)
	negative := strings.HasPrefix(value, "-") && (asInt == nil || errors.Is(asInt, strconv.ErrRange))
	switch {
	case kind.signed && outOfRange:
		lo := int64(-1) << (kind.bits - 1)
		return "--" + f.Name, outside(value, strconv.FormatInt(lo, 10), strconv.FormatInt(^lo, 10))
	case !kind.signed && (outOfRange || negative):
		return "--" + f.Name, outside(value, "0", strconv.FormatUint(^uint64(0)>>(64-kind.bits), 10))
	}
	return "--" + f.Name, "not a whole number"
}

// outside is the problem of a flag's value that is past one end of the range lo..hi: "out of
// range (at least LO)" for a negative value, else "out of range (at most HI)".
func outside(value, lo, hi string) string {
	if strings.HasPrefix(value, "-") {
		return "out of range (at least " + lo + ")"
	}
	return "out of range (at most " + hi + ")"
}

// intFlagTypes maps pflag's integer flag types (Value.Type()) to their size in bits and whether
// they take negative values.
var intFlagTypes = map[string]struct {
	bits   int
	signed bool
}{
	"int": {strconv.IntSize, true}, "int8": {8, true}, "int16": {16, true}, "int32": {32, true}, "int64": {64, true},
	"uint": {strconv.IntSize, false}, "uint8": {8, false}, "uint16": {16, false}, "uint32": {32, false}, "uint64": {64, false},
}

// durationSyntax is a Go duration as time.ParseDuration reads it ("1h30m", "-1.5s"), whatever
// its size.
var durationSyntax = regexp.MustCompile(`^[-+]?((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$`)

// flagHint is "; did you mean --NAME?" when err is pflag's unknown long flag (--NAME, not a
// shorthand) and config.Nearest finds visible flags of cmd it is likely a typo of (ties joined
// with " or "), "" otherwise.
func flagHint(cmd *cobra.Command, err error) string {
	var ne *pflag.NotExistError
	if !errors.As(err, &ne) || ne.GetSpecifiedShortnames() != "" || !strings.HasPrefix(err.Error(), "unknown flag: --") {
		return ""
	}
	var visible []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) { // in name order
		if !f.Hidden {
			visible = append(visible, f.Name)
		}
	})
	names := config.Nearest(ne.GetSpecifiedName(), visible)
	if len(names) == 0 {
		return ""
	}
	return "; did you mean --" + strings.Join(names, " or --") + "?"
}

func main() {
	configureRoot()
	if err := execute(); err != nil {
		// Every line of an error of several (one per problem, errors.Join) starts "ddpm: ",
		// so each reads as ddpm's.
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(os.Stderr, "ddpm:", line)
		}
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

// exitBug is the exit status of a panic that reaches main: a bug in ddpm, not a mistake in the
// command line or its input (status 2) nor a failure of the run or the machine (status 1). It is
// sysexits.h's EX_SOFTWARE. The Go runtime's own status for a panic is 2, which ddpm local (and a
// script) took for refused input: a trainer that crashed stopped the whole run instead of being
// restarted.
const exitBug = 70

// envTestPanic, set to some text, makes every command panic with that text once its flags are
// parsed (a cobra initializer), as a library panic would. Only tests set it
// (TestPanicExitsAsBug): no user-visible flag exists for it.
const envTestPanic = "DDPM_TEST_PANIC"

// execute runs the command line. A panic on this goroutine (every command's RunE runs on it: a
// library's index out of range, a nil map) is turned into exitBug: its stack trace goes to
// stderr first, as the Go runtime would print it (under ddpm local that is the child's log,
// under Kubernetes the container's log, so the trace reaches a bug report), and then the
// returned error's one line, which main prints last: "ddpm: internal error (a bug in ddpm, not
// in your input): VALUE; its stack trace is above; please report it with the trace". Deferred
// calls of the commands have run by then (locks released, temporary files removed). A panic on
// another goroutine (a gRPC handler's, a ring worker's) and a fatal runtime error (a concurrent
// map write, out of memory) cannot be recovered here: the runtime prints them and exits 2.
func execute() (err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		fmt.Fprintf(os.Stderr, "panic: %v\n\n%s\n", r, debug.Stack())
		what := strings.Join(strings.Fields(fmt.Sprint(r)), " ") // one line whatever the value holds
		err = withExit(exitBug, fmt.Errorf("internal error (a bug in ddpm, not in your input): %s; its stack trace is above; please report it with the trace", what))
	}()
	if v := os.Getenv(envTestPanic); v != "" {
		cobra.OnInitialize(func() { panic(v) })
	}
	return rootCmd.Execute()
}
