package config

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Every setting says what SIGHUP does with it: a new setting without a
// row in the reload table fails here.
func TestEverySettingHasAReloadClass(t *testing.T) {
	for _, s := range Settings() {
		if s.Reload != ReloadLive && s.Reload != ReloadRestart {
			t.Errorf("setting %s is not classified for reload: add it to reloads in settings.go (live if daemon.Reload applies it, else restart)", s.Key)
		}
	}
	for key := range reloads {
		if settingByKey[key] == nil {
			t.Errorf("reloads names %q, which is not a setting", key)
		}
	}
}

// RestartChanges names exactly the restart settings that differ, by key,
// and never a live one.
func TestRestartChanges(t *testing.T) {
	a := Default()
	if got := RestartChanges(&a, &a); len(got) != 0 {
		t.Fatalf("no change: %v", got)
	}
	var want []string
	for _, s := range settings {
		b := Default()
		f := s.field(&b)
		switch f.Kind() {
		case reflect.String:
			f.SetString(f.String() + "x")
		case reflect.Bool:
			f.SetBool(!f.Bool())
		case reflect.Int, reflect.Int64:
			f.SetInt(f.Int() + 1)
		case reflect.Float64:
			f.SetFloat(f.Float() + 1)
		case reflect.Slice:
			f.Set(reflect.Append(f, reflect.Zero(f.Type().Elem()))) // one more "" or table
		case reflect.Map:
			m := reflect.MakeMap(f.Type()) // one entry (pricing)
			m.SetMapIndex(reflect.ValueOf("x").Convert(f.Type().Key()), reflect.Zero(f.Type().Elem()))
			f.Set(m)
		default:
			t.Fatalf("%s: no way to change a %s", s.Key, f.Kind())
		}
		got := RestartChanges(&a, &b)
		if s.Reload == ReloadLive {
			if len(got) != 0 {
				t.Errorf("live %s reported as needing a restart: %v", s.Key, got)
			}
			continue
		}
		if !slices.Equal(got, []string{s.Key}) {
			t.Errorf("changed %s: got %v", s.Key, got)
		}
		want = append(want, s.Key)
	}
	if len(want) == 0 {
		t.Fatal("no restart setting")
	}
	// nil and empty lists are the same.
	b := Default()
	a.Log.Redact, b.Log.Redact = nil, []string{}
	if got := RestartChanges(&a, &b); len(got) != 0 {
		t.Fatalf("nil vs empty list: %v", got)
	}
}

// claudeflare.toml(5) lists, under RELOAD, exactly the live settings.
func TestManPageListsLiveSettings(t *testing.T) {
	b, err := os.ReadFile("../man/claudeflare.toml.5")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n.SH RELOAD\n")
	if !ok {
		t.Fatal("claudeflare.toml.5 has no RELOAD section")
	}
	sec, _, _ = strings.Cut(sec, "\n.SH ")
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile(`\\fB([a-z_.0-9]+)\\fR`).FindAllStringSubmatch(sec, -1) {
		listed[m[1]] = true
	}
	for _, s := range Settings() {
		if s.Reload == ReloadLive && !listed[s.Key] {
			t.Errorf("RELOAD in claudeflare.toml.5 does not list the live setting %s", s.Key)
		}
		if s.Reload != ReloadLive && listed[s.Key] && s.Key != "server.tls_cert" && s.Key != "server.tls_key" {
			t.Errorf("RELOAD in claudeflare.toml.5 lists %s, which needs a restart", s.Key)
		}
	}
}
