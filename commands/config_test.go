package commands

import (
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/config"
)

func TestShowValueRedacts(t *testing.T) {
	cfg := config.Default()
	for _, tc := range []struct {
		key  string
		v    any
		leak string
	}{
		{"upstream_url", "https://user:hunter2@example.com/v1", "hunter2"},
		{"upstream_url", "https://tok3nvalue@example.com/v1", "tok3nvalue"},
		{"oauth_token_url", "https://a:s3cr3t@example.com/token", "s3cr3t"},
		{"allowed_origins", []string{"https://x:pw9@example.com"}, "pw9"},
		{"client_id", "AGE-SECRET-KEY-1ABCDEF", "AGE-SECRET-KEY-1ABCDEF"},
		{"client_id", "sk-ant-abcdefghijkl", "sk-ant-abcdefghijkl"},
		{"server.passphrase", "plain words", "plain words"},
	} {
		got := tomlValue(showValue(tc.key, tc.v, &cfg))
		if strings.Contains(got, tc.leak) {
			t.Errorf("showValue(%q, %v) = %s: shows the secret", tc.key, tc.v, got)
		}
	}
	if got := showValue("upstream_url", "https://example.com/v1", &cfg); got != "https://example.com/v1" {
		t.Errorf("a URL without userinfo: got %v", got)
	}
}
