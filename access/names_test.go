package access_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/access"
)

// TestValidateKeyNameRefusesDotsAndControls: "." and ".." (and any name
// of only dots) and control characters are refused with one line that
// shows the name escaped; names with dots inside stay valid (issue 11,
// item 13).
func TestValidateKeyNameRefusesDotsAndControls(t *testing.T) {
	for _, name := range []string{".", "..", "...", "a\x00", "a\tb", "a\nb", "\x1b[31mred", "a\x7f", "a\u0085b", "a\u202eb", "a b", "-x", ""} {
		err := access.ValidateKeyName(name)
		if !errors.Is(err, access.ErrInvalidName) {
			t.Errorf("%q: got %v", name, err)
			continue
		}
		if strings.ContainsFunc(err.Error(), func(r rune) bool { return r < 0x20 || r == 0x7f || r == 0x85 || r == 0x202e }) {
			t.Errorf("%q: the error carries the raw control character: %q", name, err)
		}
	}
	for _, name := range []string{"ci", "ci.bot", ".hidden", "a..b", "me@example.com", "x_1-2"} {
		if err := access.ValidateKeyName(name); err != nil {
			t.Errorf("%q refused: %v", name, err)
		}
	}
}
