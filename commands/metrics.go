package commands

import (
	"runtime/debug"
)

// buildInfo is the version, commit and build date: the -ldflags values,
// else the module's build info.
func buildInfo() (version, commit, date string) {
	version, commit, date = Version, Commit, Date
	if bi, ok := debug.ReadBuildInfo(); ok {
		if version == "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && commit == "":
				commit = s.Value
			case s.Key == "vcs.time" && date == "":
				date = s.Value
			}
		}
	}
	if version == "" || version == "(devel)" {
		version = "dev"
	}
	return version, commit, date
}
