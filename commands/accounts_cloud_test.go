package commands_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/internal/fakecloud"
)

// accounts add/login --bedrock and --vertex: credentials from stdin,
// checked (bad input: exit 2, one line, no secret, nothing stored),
// sealed (not in any file of the data dir), listed with their kind.
func TestAccountsAddCloud(t *testing.T) {
	c := newCLI(t)
	br := fakecloud.NewBedrock("us-east-1")
	defer br.Close()
	vx := fakecloud.NewVertex("claudeflare-test", "us-east5")
	defer vx.Close()
	keys := string(br.Keys.JSON())

	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{`{"access_key_id":"AKIA1","secret_access_key":"` + br.Keys.SecretAccessKey + ` oops"}`, []string{"--bedrock", "--region", "us-east-1"}, "one line without spaces"},
		{`{"access_key_id":"AKIA1"}`, []string{"--bedrock", "--region", "us-east-1"}, "no secret_access_key"},
		{keys, []string{"--bedrock"}, "--region is required"},
		{keys, []string{"--bedrock", "--vertex", "--region", "us-east-1"}, "exclude each other"},
		{keys, []string{"--bedrock", "--region", "us-east-1", "--api-key-stdin"}, "exclude each other"},
		{keys, []string{"--region", "us-east-1"}, "add --bedrock or --vertex"},
		{keys, []string{"--vertex", "--region", "us-east5", "--project", vx.Project}, "not a service-account key"},
		{string(vx.KeyJSON()), []string{"--vertex", "--region", "us-east5"}, "--project is required"},
		{keys, []string{"--bedrock", "--region", "us-east-1", "--endpoint", "http://bedrock.example"}, "https://"},
	} {
		_, stderr, code := c.Run(tc.stdin, append([]string{"accounts", "add", "bad"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) || strings.Contains(stderr, br.Keys.SecretAccessKey) ||
			strings.Contains(stderr, "PRIVATE KEY") || strings.Count(strings.TrimSpace(stderr), "\n") > 1 {
			t.Errorf("add %v: exit %d, stderr %q (want exit 2 and %q)", tc.args, code, stderr, tc.want)
		}
	}
	if out := c.MustRun("", "accounts", "list", "--json"); strings.Contains(out, `"bad"`) {
		t.Fatalf("bad input stored an account: %s", out)
	}

	c.MustRun(keys, "accounts", "add", "bed", "--bedrock", "--region", "us-east-1", "--endpoint", br.URL, "--priority", "3")
	c.MustRun(string(vx.KeyJSON()), "accounts", "add", "vtx", "--vertex", "--region", "us-east5", "--project", vx.Project, "--endpoint", vx.URL)
	out := c.MustRun("", "accounts", "list", "--json")
	if !strings.Contains(out, `"name":"bed","kind":"bedrock"`) || !strings.Contains(out, `"name":"vtx","kind":"vertex"`) {
		t.Fatalf("list: %s", out)
	}
	table := c.MustRun("", "accounts", "list")
	if !strings.Contains(table, "bedrock") || !strings.Contains(table, "vertex") {
		t.Errorf("table: %s", table)
	}

	// login: same kind only; new keys and settings.
	if _, stderr, code := c.Run(string(vx.KeyJSON()), "accounts", "login", "bed", "--vertex", "--region", "us-east5", "--project", vx.Project); code != 1 || !strings.Contains(stderr, "is a bedrock account") {
		t.Errorf("vertex credentials for a bedrock account: exit %d %q", code, stderr)
	}
	if _, stderr, code := c.Run("sk-ant-api03-x", "accounts", "login", "bed", "--api-key-stdin"); code != 1 || !strings.Contains(stderr, "bedrock") {
		t.Errorf("an API key for a bedrock account: exit %d %q", code, stderr)
	}
	c.MustRun(keys, "accounts", "login", "bed", "--bedrock", "--region", "us-west-2")
	c.MustRun(string(vx.KeyJSON()), "accounts", "login", "vtx", "--vertex")

	// Nothing of the credentials in plaintext in the data dir.
	secrets := []string{br.Keys.SecretAccessKey, br.Keys.SessionToken, "BEGIN PRIVATE KEY", vx.PrivateKeyPEM()[40:80]}
	filepath.Walk(c.dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds a cloud secret in plaintext", p)
			}
		}
		return nil
	})
}
