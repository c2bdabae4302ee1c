package commands

import (
	"io"
	"slices"
	"strings"
	"testing"
)

// Global flags after the command (or its subcommand) move in front of it;
// the command's own flags, positionals and anything after "--" stay.
func TestHoistGlobalFlags(t *testing.T) {
	app := NewApp(strings.NewReader(""), io.Discard, io.Discard)
	for _, tt := range []struct{ in, want string }{
		{"daemon --data-dir X", "--data-dir X daemon"},
		{"daemon --port 0 --data-dir=X", "--data-dir=X daemon --port 0"},
		{"accounts list --data-dir X --json", "--data-dir X accounts list --json"},
		{"accounts --data-dir X list", "--data-dir X accounts list"},
		{"--config c.toml accounts add work --identity id.txt --refresh-token-stdin", "--config c.toml --identity id.txt accounts add work --refresh-token-stdin"},
		{"payload export -- --data-dir X", "payload export -- --data-dir X"},
		{"accounts list --no-such", "accounts list --no-such"},
		{"--data-dir X init", "--data-dir X init"},
		{"config show --quiet --log-level warn", "--quiet --log-level warn config show"},
		{"nosuch --data-dir X", "nosuch --data-dir X"},
	} {
		got := hoistGlobalFlags(app, append([]string{"claudeflare"}, strings.Fields(tt.in)...))[1:]
		if want := strings.Fields(tt.want); !slices.Equal(got, want) {
			t.Errorf("%s:\n got %q\nwant %q", tt.in, got, want)
		}
	}
}
