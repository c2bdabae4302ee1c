package commands

import (
	"runtime/debug"
	"testing"
)

// readBuild takes the commit and date from Go's VCS stamp, says "devel"
// and "unknown" for what is absent, and lets -ldflags values win.
func TestReadBuild(t *testing.T) {
	stamped := &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Version: "v1.4.0"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2"},
			{Key: "vcs.time", Value: "2026-11-30T10:00:00Z"},
			{Key: "vcs.modified", Value: "false"},
		}}
	b := readBuild(stamped, true)
	if b.Version != "v1.4.0" || b.Commit != "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2" || b.Date != "2026-11-30T10:00:00Z" || b.Go != "go1.99.1" {
		t.Errorf("stamped: %+v", b)
	}
	stamped.Settings[3].Value = "true"
	if b := readBuild(stamped, true); b.Commit != "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2 (modified)" {
		t.Errorf("modified: %+v", b)
	}

	for name, bi := range map[string]*debug.BuildInfo{
		"devel":    {Main: debug.Module{Version: "(devel)"}},
		"no info":  nil,
		"no stamp": {},
	} {
		b := readBuild(bi, bi != nil)
		if b.Version != "devel" || b.Commit != "unknown" || b.Date != "unknown" || b.Go == "" {
			t.Errorf("%s: %+v", name, b)
		}
	}

	saved := [3]string{Version, Commit, Date}
	defer func() { Version, Commit, Date = saved[0], saved[1], saved[2] }()
	Version, Commit, Date = "v2.0.0", "feedface", "2027-01-01T00:00:00Z"
	if b := readBuild(stamped, true); b.Version != "v2.0.0" || b.Commit != "feedface" || b.Date != "2027-01-01T00:00:00Z" {
		t.Errorf("ldflags: %+v", b)
	}
}
