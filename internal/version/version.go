// Package version holds the build's version string, set by the linker
// (-ldflags "-X ddpm/internal/version.Version=...") and reported by `ddpm version`,
// by trainers when they join (the coordinator refuses mismatched binaries) and in /metrics.
package version

// Version is the binary's version; "dev" when built without the Makefile.
var Version = "dev"
