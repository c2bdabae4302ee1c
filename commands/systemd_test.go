package commands_test

import (
	"bufio"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
)

// unit is a systemd unit file: key -> values, in order ([Section] lines
// and comments dropped).
type unit map[string][]string

func readUnit(t *testing.T, name string) unit {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "contrib", "systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "[") {
			continue
		}
		k, v, _ := strings.Cut(l, "=")
		u[k] = append(u[k], v)
	}
	return u
}

// env is the value of the unit's Environment=NAME=value.
func (u unit) env(name string) string {
	for _, v := range u["Environment"] {
		if k, val, _ := strings.Cut(v, "="); k == name {
			return val
		}
	}
	return ""
}

// node is a file or directory the install steps make.
type node struct {
	dir          bool
	mode         os.FileMode
	owner, group string
}

// installedTree runs the install steps on a model of the file system: what
// each path would be, with its mode, owner and group. The steps run as
// root (sudo). Any step it does not understand fails the test, so that the
// documentation cannot grow a step no test checks.
type installedTree struct {
	t      *testing.T
	nodes  map[string]node
	groups map[string]bool // groups that exist
}

func newTree(t *testing.T) *installedTree {
	tr := &installedTree{t: t, nodes: map[string]node{}, groups: map[string]bool{"root": true}}
	for _, d := range []string{"/", "/etc", "/etc/systemd", "/etc/systemd/system", "/usr", "/usr/local", "/usr/local/bin", "/var", "/var/lib"} {
		tr.nodes[d] = node{dir: true, mode: 0o755, owner: "root", group: "root"}
	}
	return tr
}

func (tr *installedTree) run(step string) {
	t := tr.t
	words := strings.Fields(strings.TrimPrefix(step, "sudo "))
	switch words[0] {
	case "systemctl":
		return // starts what the other steps installed
	case "useradd":
		var user string
		userGroup := false
		for i := 1; i < len(words); i++ {
			switch w := words[i]; {
			case w == "--user-group" || w == "-U":
				userGroup = true
			case w == "--system" || w == "-r":
			case strings.HasPrefix(w, "-"):
				i++ // an option's value
			default:
				user = w
			}
		}
		if !userGroup {
			t.Fatalf("%q: without --user-group the service's Group= may not exist (USERGROUPS_ENAB differs between distributions)", step)
		}
		tr.groups[user] = true
	case "sh":
		// sh -c 'umask 077; age-keygen -o FILE'
		script := strings.Trim(strings.TrimPrefix(strings.TrimPrefix(step, "sudo "), "sh -c "), "'")
		umask := os.FileMode(0o022)
		for _, part := range strings.Split(script, ";") {
			f := strings.Fields(part)
			switch {
			case len(f) == 2 && f[0] == "umask":
				m, err := strconv.ParseUint(f[1], 8, 32)
				if err != nil {
					t.Fatalf("%q: umask %v", step, err)
				}
				umask = os.FileMode(m)
			case len(f) == 3 && f[0] == "age-keygen" && f[1] == "-o":
				tr.create(step, f[2], node{mode: 0o666 &^ umask, owner: "root", group: "root"})
			default:
				t.Fatalf("%q: step not understood by this test: %q", step, part)
			}
		}
	case "install":
		tr.install(step, words[1:])
	default:
		t.Fatalf("install step not understood by this test: %q", step)
	}
}

// install is install(1): -d DIR..., or SOURCE... DEST.
func (tr *installedTree) install(step string, args []string) {
	t := tr.t
	n := node{mode: 0o755, owner: "root", group: "root"}
	var operands []string
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "-d":
			n.dir = true
		case "-m", "-o", "-g":
			if i+1 >= len(args) {
				t.Fatalf("%q: %s without a value", step, args[i])
			}
			v := args[i+1]
			switch args[i] {
			case "-m":
				m, err := strconv.ParseUint(v, 8, 32)
				if err != nil {
					t.Fatalf("%q: mode %v", step, err)
				}
				n.mode = os.FileMode(m)
			case "-o":
				n.owner = v
			case "-g":
				if !tr.groups[v] {
					t.Fatalf("%q: group %s does not exist at this step", step, v)
				}
				n.group = v
			}
			i++
		default:
			if strings.HasPrefix(args[i], "-") {
				t.Fatalf("%q: option %s not understood by this test", step, args[i])
			}
			operands = append(operands, args[i])
		}
	}
	if n.dir {
		for _, d := range operands {
			tr.create(step, d, n)
		}
		return
	}
	if len(operands) < 2 {
		t.Fatalf("%q: install needs a source and a destination", step)
	}
	dest, sources := operands[len(operands)-1], operands[:len(operands)-1]
	for _, src := range sources {
		if _, err := os.Stat(filepath.Join("..", src)); err != nil && src != "claudeflare" {
			t.Errorf("%q: %s is not in the repository", step, src)
		}
	}
	if d, ok := tr.nodes[strings.TrimSuffix(dest, "/")]; ok && d.dir {
		for _, src := range sources {
			tr.create(step, path.Join(dest, path.Base(src)), n)
		}
		return
	}
	if len(sources) != 1 {
		t.Fatalf("%q: several sources need a directory", step)
	}
	tr.create(step, dest, n)
}

func (tr *installedTree) create(step, p string, n node) {
	p = path.Clean(p)
	if parent, ok := tr.nodes[path.Dir(p)]; !ok || !parent.dir {
		tr.t.Fatalf("%q: %s has no parent directory at this step", step, p)
	}
	tr.nodes[p] = n
}

// can reports whether user (with group as its only group) may do what
// (4 read, 1 search/execute) on p, after searching every directory above
// it, as the kernel decides for a process that is not root.
func (tr *installedTree) can(user, group, p string, what os.FileMode) (bool, string) {
	allowed := func(n node, bits os.FileMode) bool {
		switch {
		case n.owner == user:
			return n.mode>>6&bits == bits
		case n.group == group:
			return n.mode>>3&bits == bits
		}
		return n.mode&bits == bits
	}
	p = path.Clean(p)
	for d := path.Dir(p); ; d = path.Dir(d) {
		n, ok := tr.nodes[d]
		if !ok {
			return false, d + " does not exist"
		}
		if !allowed(n, 1) {
			return false, d + " cannot be searched (" + n.mode.String() + " " + n.owner + ":" + n.group + ")"
		}
		if d == "/" {
			break
		}
	}
	n, ok := tr.nodes[p]
	if !ok {
		return false, p + " is not made by the install steps"
	}
	if !allowed(n, what) {
		return false, p + " is " + n.mode.String() + " " + n.owner + ":" + n.group
	}
	return true, ""
}

// readmeInstallSteps are the commands of the first sh block under
// "## Running under systemd".
func readmeInstallSteps(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "## Running under systemd")
	if !ok {
		t.Fatal("README.md has no \"## Running under systemd\"")
	}
	_, block, ok := strings.Cut(sec, "```sh\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("README.md's systemd section has no sh block")
	}
	return splitSteps(block)
}

// unitInstallSteps are the "#   sudo ..." lines of the unit's header.
func unitInstallSteps(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../contrib/systemd/claudeflare.service")
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, l := range strings.Split(string(b), "\n") {
		if s, ok := strings.CutPrefix(l, "#   sudo "); ok {
			steps = append(steps, "sudo "+s)
		}
	}
	return steps
}

// splitSteps splits a shell block into commands: one a line, "&&" chains
// split, comments dropped.
func splitSteps(block string) []string {
	var steps []string
	for _, l := range strings.Split(block, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		for _, s := range strings.Split(l, "&&") {
			steps = append(steps, strings.TrimSpace(s))
		}
	}
	return steps
}

// TestSystemdInstallSteps renders the documented install steps (the
// README's and the unit header's, which must be the same) and checks
// what the service needs: its user can run the binary and read the config
// the unit names, every directory above them searchable; the master
// identity stays root's alone (systemd reads it for LoadCredential=); the
// units are installed; the config installed is a valid config. Then it has
// systemd-analyze verify the units, where systemd is installed.
func TestSystemdInstallSteps(t *testing.T) {
	readme, fromUnit := readmeInstallSteps(t), unitInstallSteps(t)
	var unitSteps []string
	for _, s := range fromUnit {
		unitSteps = append(unitSteps, splitSteps(s)...)
	}
	if strings.Join(readme, "\n") != strings.Join(unitSteps, "\n") {
		t.Errorf("the README's install steps and the unit's header differ:\nREADME:\n%s\nunit:\n%s", strings.Join(readme, "\n"), strings.Join(unitSteps, "\n"))
	}
	tr := newTree(t)
	for _, s := range readme {
		tr.run(s)
	}

	for _, name := range []string{"claudeflare.service", "claudeflare-cleanup.service"} {
		u := readUnit(t, name)
		user, group := u["User"][0], u["Group"][0]
		if !tr.groups[group] {
			t.Errorf("%s: Group=%s is never made", name, group)
		}
		bin := strings.Fields(u["ExecStart"][0])[0]
		if ok, why := tr.can(user, group, bin, 1); !ok {
			t.Errorf("%s: %s cannot run %s: %s", name, user, bin, why)
		}
		cfgPath := u.env("CLAUDEFLARE_CONFIG_PATH")
		if cfgPath == "" {
			t.Errorf("%s: no CLAUDEFLARE_CONFIG_PATH: the service and the README's config differ", name)
		} else if ok, why := tr.can(user, group, cfgPath, 4); !ok {
			t.Errorf("%s: %s cannot read its config %s: %s (the unit would fail at start)", name, user, cfgPath, why)
		}
		for _, cred := range u["LoadCredential"] {
			_, src, _ := strings.Cut(cred, ":")
			n, ok := tr.nodes[src]
			if !ok {
				t.Errorf("%s: LoadCredential= source %s is not made by the install steps", name, src)
				continue
			}
			if readable, _ := tr.can(user, group, src, 4); readable || n.owner != "root" || n.mode&0o077 != 0 {
				t.Errorf("%s: the master identity %s is %v %s:%s: it must be root's alone", name, src, n.mode, n.owner, n.group)
			}
		}
	}
	for _, name := range []string{"claudeflare.service", "claudeflare-cleanup.service", "claudeflare-cleanup.timer"} {
		if n, ok := tr.nodes["/etc/systemd/system/"+name]; !ok || n.mode != 0o644 {
			t.Errorf("%s is not installed 0644 by the steps", name)
		}
	}
	// The config the steps install loads, with the unit's environment.
	unitEnv := func(k string) string {
		return strings.ReplaceAll(readUnit(t, "claudeflare.service").env(k), "%S", "/var/lib")
	}
	if _, err := config.Load(config.Source{Path: "../claudeflare.toml.example", Getenv: unitEnv}); err != nil {
		t.Errorf("the config the install steps copy does not load: %v", err)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not found: units not verified")
		return
	}
	dir := t.TempDir()
	var files []string
	for _, name := range []string{"claudeflare.service", "claudeflare-cleanup.service", "claudeflare-cleanup.timer"} {
		b, err := os.ReadFile("../contrib/systemd/" + name)
		if err != nil {
			t.Fatal(err)
		}
		// Verify checks that ExecStart= binaries exist.
		b = []byte(strings.ReplaceAll(string(b), "/usr/local/bin/claudeflare", "/bin/true"))
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, files...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestSystemdUnitSettings checks what the units promise: Type=notify with
// ExecReload= (systemd 252 has no notify-reload), a watchdog, no restart
// loop on a config error, and a cleanup that agrees with the daemon's
// retention defaults and can reach a network database.
func TestSystemdUnitSettings(t *testing.T) {
	u := readUnit(t, "claudeflare.service")
	for k, want := range map[string]string{
		"Type": "notify", "NotifyAccess": "main", "ExecReload": "/bin/kill -HUP $MAINPID",
		"RestartPreventExitStatus": "2", "Restart": "on-failure",
	} {
		if len(u[k]) != 1 || u[k][0] != want {
			t.Errorf("claudeflare.service: %s=%q, want %q", k, u[k], want)
		}
	}
	wd, err := time.ParseDuration(strings.Join(u["WatchdogSec"], ""))
	if err != nil || wd < 10*time.Second {
		t.Errorf("claudeflare.service: WatchdogSec=%q: want a duration of 10s or more", u["WatchdogSec"])
	}

	c := readUnit(t, "claudeflare-cleanup.service")
	def := config.Default().Retention
	want := map[string]time.Duration{"payloads": def.PayloadsMaxAge.Std(), "requests": def.RequestsMaxAge.Std()}
	got := map[string]time.Duration{}
	for _, exe := range c["ExecStart"] {
		f := strings.Fields(exe)
		var age, typ string
		for i := 0; i+1 < len(f); i++ {
			switch f[i] {
			case "--older-than":
				age = f[i+1]
			case "--type":
				typ = f[i+1]
			}
		}
		d, err := config.ParseDuration(age)
		if err != nil {
			t.Fatalf("claudeflare-cleanup.service: ExecStart=%s: %v", exe, err)
		}
		got[typ] = d
	}
	for typ, d := range want {
		if got[typ] != d {
			t.Errorf("claudeflare-cleanup.service deletes %s older than %v; the daemon's default retention is %v", typ, got[typ], d)
		}
	}
	if len(c["PrivateNetwork"]) > 0 || !strings.Contains(strings.Join(c["RestrictAddressFamilies"], " "), "AF_INET") {
		t.Errorf("claudeflare-cleanup.service cannot reach a network database: PrivateNetwork=%q RestrictAddressFamilies=%q", c["PrivateNetwork"], c["RestrictAddressFamilies"])
	}
	if c.env("CLAUDEFLARE_CONFIG_PATH") != u.env("CLAUDEFLARE_CONFIG_PATH") || c.env("CLAUDEFLARE_DATA_DIR") != u.env("CLAUDEFLARE_DATA_DIR") {
		t.Error("claudeflare-cleanup.service reads another config or data dir than claudeflare.service")
	}
}
