package commands_test

import (
	"bufio"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/claudeflare/claudeflare/commands"
)

// The interactive login: the URL goes to stderr, the pasted code#state is
// read from stdin, the tokens are exchanged and stored.
func TestAccountsAddInteractive(t *testing.T) {
	c := newCLI(t)
	for _, kv := range c.Env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	for _, mode := range []string{"max", "console"} {
		inR, inW := io.Pipe()
		errR, errW := io.Pipe()
		var stdout strings.Builder
		done := make(chan int)
		go func() {
			done <- commands.Run([]string{"claudeflare", "accounts", "add", "login-" + mode, "--mode", mode}, inR, &stdout, errW)
			errW.Close()
		}()
		sc := bufio.NewScanner(errR)
		var authURL *url.URL
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "https://") {
				authURL, _ = url.Parse(sc.Text())
				break
			}
		}
		if authURL == nil {
			t.Fatal("no authorize URL printed")
		}
		wantHost := map[string]string{"max": "claude.ai", "console": "console.anthropic.com"}[mode]
		q := authURL.Query()
		if authURL.Host != wantHost || q.Get("code_challenge_method") != "S256" || q.Get("state") == "" || q.Get("code") != "true" {
			t.Fatalf("authorize URL %s", authURL)
		}
		go io.Copy(io.Discard, errR)
		code := c.fake.NewAuthCode("login-" + mode)
		c.fake.ExpectChallenge(code, q.Get("code_challenge"))
		fmt.Fprintf(inW, "%s#%s\n", code, q.Get("state"))
		if rc := <-done; rc != 0 {
			t.Fatalf("%s: exit %d", mode, rc)
		}
		if stdout.Len() != 0 {
			t.Errorf("stdout is for data only, got %q", stdout.String())
		}
	}
	out := c.MustRun("", "accounts", "list", "--json")
	if !strings.Contains(out, `"name":"login-max","kind":"oauth"`) || !strings.Contains(out, `"name":"login-console","kind":"apikey"`) {
		t.Fatalf("list: %s", out)
	}

	// A pasted state that does not match is refused and nothing is stored.
	inR, inW := io.Pipe()
	errR, errW := io.Pipe()
	done := make(chan int)
	go func() {
		done <- commands.Run([]string{"claudeflare", "accounts", "add", "bad"}, inR, io.Discard, errW)
		errW.Close()
	}()
	var stderr strings.Builder
	go func() { io.Copy(&stderr, errR) }()
	fmt.Fprintf(inW, "%s#%s\n", c.fake.NewAuthCode("bad"), "not-the-state")
	if rc := <-done; rc == 0 {
		t.Fatal("mismatched state accepted")
	}
	if out := c.MustRun("", "accounts", "list", "--json"); strings.Contains(out, `"name":"bad"`) {
		t.Fatal("account stored despite a bad state")
	}
}

// Two processes changing accounts at the same moment lose neither change.
func TestConcurrentAccountUpdatesFromProcesses(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	c.MustRun(c.fake.NewAPIKey("base"), "accounts", "add", "base", "--api-key-stdin")
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan string, 2*n)
	for i := 0; i < n; i++ {
		wg.Add(2)
		go func(i int) {
			defer wg.Done()
			if _, e, code := c.Run(c.fake.NewOAuthAccount(fmt.Sprint("acct", i)), "accounts", "add", fmt.Sprint("acct", i), "--refresh-token-stdin"); code != 0 {
				errs <- e
			}
		}(i)
		go func(i int) {
			defer wg.Done()
			verb := []string{"pause", "resume"}[i%2]
			if _, e, code := c.Run("", "accounts", verb, "base"); code != 0 {
				errs <- e
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	out := c.MustRun("", "accounts", "list", "--json")
	for i := 0; i < n; i++ {
		if !strings.Contains(out, fmt.Sprintf(`"name":"acct%d"`, i)) {
			t.Errorf("acct%d lost", i)
		}
	}
}
