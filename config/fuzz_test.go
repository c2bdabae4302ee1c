package config

import (
	"errors"
	"os"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the loader as a config file: it must
// never panic, every error must be an *Error, and whatever loads must pass
// validation.
func FuzzLoad(f *testing.F) {
	if ex, err := os.ReadFile(examplePath); err == nil {
		f.Add(ex)
	}
	for _, s := range []string{
		"",
		"port = 9000\n",
		"lb_stratgy = \"x\"\n",
		"[server]\nallow_ips = [\"10.0.0.0/8\", \"::1\"]\nshutdown_grace = \"1w2d\"\n",
		"[log]\nredact = ['(']\n",
		"server = { tls_cert = \"a\", tls_key = \"b\" }\n",
		"client_id = \"\"\"\nx = 1\n\"\"\"\nbogus = 1\n",
		"[[server]]\n",
		"a.b.c = 1\n[a]\n",
		"port = \"x\"\n",
		"[retention]\ninterval = 5\n",
		"data_dir = \"~/x\"\n",
	} {
		f.Add([]byte(s))
	}
	getenv := env{"HOME": "/home/fuzz"}.get
	f.Fuzz(func(t *testing.T, data []byte) {
		l := &loader{getenv: getenv}
		c, err := l.load("/etc/claudeflare/fuzz.toml", data, Source{})
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T %v is not a *config.Error", err, err)
			}
			if ce.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("loaded config does not validate: %v", err)
		}
		if c.DataDir == "" {
			t.Fatal("empty data dir")
		}
	})
}
