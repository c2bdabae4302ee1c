package commands

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// build is what `claudeflare version` reports.
type build struct {
	Version  string // module version, "devel" for a build from a checkout
	Commit   string // vcs.revision, "unknown" when not stamped
	Date     string // vcs.time (the commit's time), "unknown" when not stamped
	Modified bool   // vcs.modified: built from a tree with uncommitted changes
	Go       string // the Go release that built the binary
	Platform string // GOOS/GOARCH
}

// readBuild reads the build from the binary's build info (ok is false
// when there is none); the -ldflags values (Version, Commit, Date) win.
// Absent fields are "devel" (version) and "unknown" (commit, date), so
// that every line of the output is always there.
func readBuild(bi *debug.BuildInfo, ok bool) build {
	b := build{Version: Version, Commit: Commit, Date: Date, Go: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if ok && bi != nil {
		if b.Version == "" {
			b.Version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			b.Go = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Commit == "" {
					b.Commit = s.Value
				}
			case "vcs.time":
				if b.Date == "" {
					b.Date = s.Value
				}
			case "vcs.modified":
				b.Modified = s.Value == "true" && Commit == "" // the stamp's own commit
			}
		}
	}
	if b.Version == "" || b.Version == "(devel)" {
		b.Version = "devel"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	} else if b.Modified {
		b.Commit += " (modified)"
	}
	if b.Date == "" {
		b.Date = "unknown"
	}
	return b
}

func currentBuild() build {
	bi, ok := debug.ReadBuildInfo()
	return readBuild(bi, ok)
}

// write prints the build, one field a line.
func (b build) write(w io.Writer) error {
	_, err := fmt.Fprintf(w, "claudeflare version %s\ncommit: %s\nbuilt: %s\ngo: %s %s\n", b.Version, b.Commit, b.Date, b.Go, b.Platform)
	return err
}

func init() {
	// --version prints what `claudeflare version` does.
	cli.VersionPrinter = func(c *cli.Context) { currentBuild().write(c.App.Writer) }
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, commit, build date and Go version (also --version)",
		Description: "The commit and date come from the version control stamp Go puts in a\n" +
			"binary built from a checkout (go build; -buildvcs); \"unknown\" when it has\n" +
			"none, and the version is \"devel\" for a build that is not a tagged module.",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("version takes no arguments")
			}
			return currentBuild().write(getEnv(c).stdout)
		},
	}
}
