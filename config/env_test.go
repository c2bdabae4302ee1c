package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The predecessor's unprefixed names are read only with Source.Legacy
// (the daemon), always below the CLAUDEFLARE_ variable; CLIENT_ID never.
func TestLegacyEnv(t *testing.T) {
	t.Run("ignored without Legacy", func(t *testing.T) {
		e := newEnv(t)
		e["PORT"] = "abc" // would be an error if it were read
		e["HOST"] = "10.0.0.1"
		e["LB_STRATEGY"] = "nonsense"
		c, err := Load(Source{Getenv: e.get})
		if err != nil {
			t.Fatal(err)
		}
		if c.Port != 8080 || c.Host != "127.0.0.1" || c.LBStrategy != StrategyAffinity {
			t.Errorf("got port %d host %s strategy %s", c.Port, c.Host, c.LBStrategy)
		}
	})
	t.Run("read with Legacy", func(t *testing.T) {
		e := newEnv(t)
		e["PORT"] = "9001"
		e["LOG_LEVEL"] = "warn"
		c, err := Load(Source{Getenv: e.get, Legacy: true})
		if err != nil {
			t.Fatal(err)
		}
		if c.Port != 9001 || c.LogLevel != "warn" {
			t.Errorf("got port %d level %s", c.Port, c.LogLevel)
		}
		if o := c.Origin("port"); o.Kind != FromEnv || o.Env != "PORT" {
			t.Errorf("origin of port %+v, want env PORT", o)
		}
	})
	t.Run("prefixed wins", func(t *testing.T) {
		e := newEnv(t)
		e["PORT"] = "abc" // shadowed: never parsed
		e["CLAUDEFLARE_PORT"] = "9002"
		c, err := Load(Source{Getenv: e.get, Legacy: true})
		if err != nil {
			t.Fatal(err)
		}
		if c.Port != 9002 {
			t.Errorf("port %d, want 9002", c.Port)
		}
		if o := c.Origin("port"); o.Kind != FromEnv || o.Env != "CLAUDEFLARE_PORT" {
			t.Errorf("origin of port %+v", o)
		}
	})
	t.Run("error names the legacy variable", func(t *testing.T) {
		e := newEnv(t)
		e["PORT"] = "abc"
		ce := loadErr(t, Source{Getenv: e.get, Legacy: true})
		if ce.Error() != `config env PORT: invalid integer "abc"` {
			t.Errorf("got %s", ce)
		}
		e = newEnv(t)
		e["RETRY_ATTEMPTS"] = "0"
		ce = loadErr(t, Source{Getenv: e.get, Legacy: true})
		if ce.Error() != `config env RETRY_ATTEMPTS: must be between 1 and 20` {
			t.Errorf("got %s", ce)
		}
	})
	t.Run("CLIENT_ID is not read", func(t *testing.T) {
		e := newEnv(t)
		e["CLIENT_ID"] = "stray"
		for _, legacy := range []bool{false, true} {
			c, err := Load(Source{Getenv: e.get, Legacy: legacy})
			if err != nil {
				t.Fatal(err)
			}
			if c.ClientID != Default().ClientID {
				t.Errorf("legacy %v: client id %q", legacy, c.ClientID)
			}
		}
		e["CLAUDEFLARE_CLIENT_ID"] = "mine"
		c, err := Load(Source{Getenv: e.get})
		if err != nil || c.ClientID != "mine" {
			t.Errorf("CLAUDEFLARE_CLIENT_ID: %v %v", c, err)
		}
	})
}

// Every setting, in a section or not, is read from its CLAUDEFLARE_
// variable: set to its default value (so that any valid value will do),
// the setting says it came from that variable.
func TestEveryEnvVariableIsRead(t *testing.T) {
	d := Default()
	n := 0
	for _, s := range settings {
		v := defaultText(s.field(&d))
		if v == "" {
			continue // an empty variable is unset
		}
		n++
		e := newEnv(t)
		e[s.Env] = v
		c, err := Load(Source{Getenv: e.get})
		if err != nil {
			t.Errorf("%s=%s: %v", s.Env, v, err)
			continue
		}
		if o := c.Origin(s.Key); o.Kind != FromEnv || o.Env != s.Env {
			t.Errorf("%s=%s: origin of %s is %+v", s.Env, v, s.Key, o)
		}
	}
	if n < 30 {
		t.Errorf("only %d settings checked", n)
	}
}

// defaultText writes a setting's value as its variable would hold it.
func defaultText(f reflect.Value) string {
	if f.Type() == durationType {
		return time.Duration(f.Int()).String()
	}
	switch f.Kind() {
	case reflect.Slice:
		if l, ok := f.Interface().([]string); ok {
			return strings.Join(l, ",")
		}
		return "" // a list of tables (alerts.webhook): empty by default
	case reflect.Float64:
		return strconv.FormatFloat(f.Float(), 'g', -1, 64)
	}
	return fmt.Sprint(f.Interface())
}

func TestOrigins(t *testing.T) {
	e := newEnv(t)
	e["CLAUDEFLARE_HOST"] = "::1"
	path := writeFile(t, "# a comment\nport = 9000\n\n[log]\npayloads = \"headers\"\n")
	c, err := Load(Source{Path: path, Getenv: e.get, Flags: map[string]string{"log_level": "warn"}})
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]Origin{
		"port":          {Kind: FromFile, File: path, Line: 2},
		"log.payloads":  {Kind: FromFile, File: path, Line: 5},
		"host":          {Kind: FromEnv, Env: "CLAUDEFLARE_HOST"},
		"log_level":     {Kind: FromFlag},
		"retry_backoff": {Kind: FromDefault},
	} {
		if got := c.Origin(key); got != want {
			t.Errorf("%s: origin %+v, want %+v", key, got, want)
		}
	}
}

func TestValue(t *testing.T) {
	c := Default()
	c.Port = 9000
	if v, ok := c.Value("port"); !ok || v != 9000 {
		t.Errorf("port: %v %v", v, ok)
	}
	if v, ok := c.Value("server.shutdown_grace"); !ok || v != Duration(30*time.Second) {
		t.Errorf("shutdown_grace: %v %v", v, ok)
	}
	if _, ok := c.Value("server"); ok {
		t.Error("a section is no setting")
	}
}

// A variable shadowed by a flag is not read at all: a bad value that is
// not used is no error.
func TestFlagShadowsEnv(t *testing.T) {
	e := newEnv(t)
	e["CLAUDEFLARE_PORT"] = "abc"
	c, err := Load(Source{Getenv: e.get, Flags: map[string]string{"port": "9003"}})
	if err != nil || c.Port != 9003 {
		t.Fatalf("got %v, %v", c, err)
	}
}
