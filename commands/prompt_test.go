package commands_test

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// On a terminal, a passphrase-protected vault without
// CLAUDEFLARE_PASSPHRASE is unlocked by asking (here `backup`, run under
// script(1) for a pseudo-terminal); the passphrase is never echoed.
func TestPassphrasePromptOnTerminal(t *testing.T) {
	scriptPath, err := exec.LookPath("script")
	if err != nil {
		t.Fatal("script(1) (util-linux) is needed for a pseudo-terminal")
	}
	c := newCLI(t)
	const pass = "correct horse battery staple"
	c.Env = append(c.Env, "CLAUDEFLARE_PASSPHRASE="+pass)
	c.MustRun("", "init")
	c.Env = c.Env[:len(c.Env)-1]
	out := filepath.Join(c.dir, "b.age")
	cmd := exec.Command(scriptPath, "-qec", os.Args[0]+" backup "+out, "/dev/null")
	cmd.Env = c.Env
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var seen strings.Builder // owned by the reader until done
	prompted, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		r := bufio.NewReader(pr)
		var once bool
		for {
			b, err := r.ReadByte()
			if err != nil {
				return
			}
			seen.WriteByte(b)
			if !once && strings.Contains(seen.String(), "Passphrase:") {
				once = true
				close(prompted)
			}
		}
	}()
	select {
	case <-prompted:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		pw.Close()
		<-done
		t.Fatalf("no prompt: %q", seen.String())
	}
	io.WriteString(in, pass+"\n")
	err = cmd.Wait()
	pw.Close()
	<-done
	if err != nil {
		t.Fatalf("backup on a terminal: %v: %s", err, seen.String())
	}
	if st, err := os.Stat(out); err != nil || st.Size() == 0 {
		t.Fatalf("no backup written: %v", err)
	}
	if strings.Contains(seen.String(), pass) {
		t.Fatal("the passphrase was echoed")
	}
}
