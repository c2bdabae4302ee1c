package commands

import "testing"

func TestPrintableEscapesWhatDrivesATerminal(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/v1/messages?beta=true", "/v1/messages?beta=true"},
		{"a\x1b[2Jb", `a\x1b[2Jb`},
		{"\r\n\t\a\x00\x7f", `\r\n\t\a\x00\x7f`},
		{`back\slash`, `back\\slash`},
		{"café 日本 😀", "café 日本 😀"},
		{"evil\u202etxt.exe", `evil\u202etxt.exe`},
		{"c1\u009b2J", `c1\u009b2J`},
		{"zero\u200bwidth", `zero\u200bwidth`},
		{"tag\U000e0041", `tag\U000e0041`},
		{"bad\xffutf8\xc3", `bad\xffutf8\xc3`},
		{"", ""},
	} {
		if got := printable(c.in); got != c.want {
			t.Errorf("printable(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := clip(printable("日本語テキスト"), 4); got != "日本語…" {
		t.Errorf("clip = %q", got)
	}
}
