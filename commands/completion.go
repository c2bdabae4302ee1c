package commands

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/store"
)

// The bash and zsh scripts ask the binary itself for the words that may
// come next (the hidden __complete command), so they follow whichever
// claudeflare is on PATH and every command it has. The fish script is
// generated in full from the command definitions.
const bashCompletion = `# bash completion for claudeflare.
# Load it in this shell:   source <(claudeflare completion bash)
# or install it:           claudeflare completion bash > ~/.local/share/bash-completion/completions/claudeflare
_claudeflare() {
	local cur="${COMP_WORDS[COMP_CWORD]}"
	local opts
	opts=$("${COMP_WORDS[0]}" __complete bash -- "${COMP_WORDS[@]:1:COMP_CWORD-1}" "$cur" 2>/dev/null)
	COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -o bashdefault -o default -F _claudeflare claudeflare
`

const zshCompletion = `#compdef claudeflare
# zsh completion for claudeflare.
# Load it in this shell:   source <(claudeflare completion zsh)
# or install it as _claudeflare in a directory of $fpath.
_claudeflare() {
	local -a opts
	opts=("${(@f)$(${words[1]} __complete zsh -- ${words[2,CURRENT-1]} "${words[CURRENT]}" 2>/dev/null)}")
	if [[ -n "${opts[1]}" ]]; then
		_describe 'values' opts
	else
		_files
	fi
}
if [[ "${funcstack[1]}" == "_claudeflare" ]]; then
	_claudeflare "$@"
else
	compdef _claudeflare claudeflare
fi
`

// fishValues adds to the generated fish script what only the data dir
// knows: account and client key names, and flags' enum words.
const fishValues = `
# Account and client key names from the data dir, and flags' values.
function __claudeflare_values
	set -l words (commandline -opc)
	$words[1] __complete fish -- $words[2..-1] (commandline -ct) 2>/dev/null
end
complete -c claudeflare -a '(__claudeflare_values)'
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script for bash, zsh or fish",
		ArgsUsage: "SHELL",
		Description: "Load it in the current shell with, for example,\n" +
			"`source <(claudeflare completion bash)`, or install it:\n" +
			"bash: ~/.local/share/bash-completion/completions/claudeflare;\n" +
			"zsh: a file named _claudeflare in a directory of $fpath;\n" +
			"fish: ~/.config/fish/completions/claudeflare.fish.",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("completion needs one argument: bash, zsh or fish")
			}
			e := getEnv(c)
			var script string
			switch shell := c.Args().First(); shell {
			case "bash":
				script = bashCompletion
			case "zsh":
				script = zshCompletion
			case "fish":
				s, err := NewApp(nil, io.Discard, io.Discard).ToFishCompletion()
				if err != nil {
					return fmt.Errorf("generate fish completion: %w", err)
				}
				script = strings.ReplaceAll(s, "`", "") + fishValues // usage placeholders
			default:
				return usagef("unknown shell %q: want bash, zsh or fish", shell)
			}
			_, err := io.WriteString(e.stdout, script)
			return err
		},
	}
}

// completeCommand is the hidden helper of the bash and zsh scripts:
// `claudeflare __complete SHELL -- WORDS... CUR` prints, one a line, the
// commands or flags that may stand where CUR is. It prints nothing where a
// file name or a value goes, and the shell falls back to file names.
func completeCommand() *cli.Command {
	return &cli.Command{
		Name:            "__complete",
		Hidden:          true,
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			args := c.Args().Slice()
			if len(args) < 2 || args[1] != "--" {
				return usagef("usage: __complete SHELL -- WORDS... CUR")
			}
			shell, words := args[0], args[2:]
			cur := ""
			if len(words) > 0 {
				cur, words = words[len(words)-1], words[:len(words)-1]
			}
			e := getEnv(c)
			app := NewApp(nil, io.Discard, io.Discard)
			names := func(kind string) []string { return e.liveNames(c.Context, words, kind) }
			cands, values := completions(app, words, cur, names)
			if shell == "fish" && !values {
				return nil // fish knows commands and flags from its script
			}
			for _, cand := range cands {
				line := cand.word
				if shell == "zsh" && cand.usage != "" {
					line += ":" + strings.ReplaceAll(strings.ReplaceAll(cand.usage, ":", "\\:"), "`", "")
				}
				fmt.Fprintln(e.stdout, line)
			}
			return nil
		},
	}
}

type candidate struct{ word, usage string }

func words2candidates(ws []string) []candidate {
	out := make([]candidate, 0, len(ws))
	for _, w := range ws {
		out = append(out, candidate{w, ""})
	}
	return out
}

// flagValueCandidates are the values flag may take, nil when any value
// (or a file name) may.
func flagValueCandidates(flag string, names func(string) []string) []candidate {
	if flag == "account" {
		return words2candidates(names(accountNames))
	}
	return words2candidates(flagValues[flag])
}

// liveNames lists the account or client key names in the data dir that
// words (--data-dir, --config) and the environment point at, reading the
// vault without creating or migrating anything; nil on any error, since
// completion must never fail loudly or change a file.
func (e *env) liveNames(ctx context.Context, words []string, kind string) []string {
	src := e.cfgSource
	src.Flags = map[string]string{}
	for i := 0; i+1 < len(words); i++ {
		switch words[i] {
		case "--data-dir", "-data-dir":
			src.Flags["data_dir"] = words[i+1]
		case "--config", "-config":
			src.Path = words[i+1]
		}
	}
	cfg, err := config.Load(src)
	if err != nil {
		return nil
	}
	path := filepath.Join(cfg.DataDir, store.VaultFile)
	if _, err := os.Stat(path); err != nil {
		return nil // nothing is created while typing
	}
	db, err := store.OpenReadOnly(path)
	if err != nil {
		return nil
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var out []string
	q := `SELECT name FROM accounts ORDER BY name`
	if kind == keyNames {
		q = `SELECT name FROM client_keys WHERE revoked_at = 0 ORDER BY name`
	}
	if err := db.R.SelectContext(ctx, &out, q); err != nil {
		return nil
	}
	return out
}

// flagValues are the values of the flags that take one of a few words.
var flagValues = map[string][]string{
	"mode":       {"max", "console"},
	"tier":       {"1", "5", "20"},
	"role":       {"api", "viewer", "admin"},
	"overage":    {store.OverageAvoid, store.OverageAllow},
	"type":       {"requests", "payloads", "all"},
	"by":         {"account", "model", "client", "hour", "day"},
	"strategy":   {config.StrategyAffinity, config.StrategySession, config.StrategyRoundRobin, config.StrategyLeastUsed},
	"log-level":  {"debug", "info", "warn", "error"},
	"log-format": {"auto", "text", "json"},
}

// Kinds of names completed from the live data dir.
const (
	accountNames = "account"
	keyNames     = "key"
)

// nameArgs are the commands whose NAME argument is an existing account or
// client key (add and create take a new name).
var nameArgs = map[string]string{
	"accounts login": accountNames, "accounts edit": accountNames, "accounts remove": accountNames,
	"accounts pause": accountNames, "accounts resume": accountNames,
	"accounts unblock": accountNames, "accounts check": accountNames,
	"apikey update": keyNames, "apikey revoke": keyNames,
}

// completions walks words through app's commands and returns what may
// follow: flags when cur starts with "-", a flag's value where one is
// known (enum words, account names from names), an existing account or
// key where a command's NAME goes, else subcommands.
func completions(app *cli.App, words []string, cur string, names func(kind string) []string) (cands []candidate, values bool) {
	flags := app.Flags
	cmds := app.Commands
	var cmd *cli.Command
	path := ""  // "accounts pause"
	npos := 0   // positional arguments after cmd
	takes := "" // the previous word is this flag, which takes a value
	for _, w := range words {
		if takes != "" {
			takes = ""
			continue
		}
		if w == "--" {
			return nil, false
		}
		if strings.HasPrefix(w, "-") && w != "-" {
			name := strings.TrimLeft(w, "-")
			if !strings.Contains(name, "=") && takesValue(flags, name) {
				takes = name
			}
			continue
		}
		next := findCommand(cmds, w)
		if next == nil {
			npos++ // a positional argument
			continue
		}
		cmd, flags, cmds, npos = next, next.Flags, next.Subcommands, 0
		path = strings.TrimSpace(path + " " + next.Name)
	}
	if takes != "" {
		return flagValueCandidates(takes, names), true // nil: file names
	}
	if kind, ok := nameArgs[path]; ok && npos == 0 && !strings.HasPrefix(cur, "-") {
		return words2candidates(names(kind)), true
	}
	var out []candidate
	if strings.HasPrefix(cur, "-") {
		for _, f := range visibleFlags(flags) {
			usage := ""
			if df, ok := f.(cli.DocGenerationFlag); ok {
				_, usage = unquoteUsage(df.GetUsage())
			}
			for _, n := range f.Names() {
				dash := "--"
				if len(n) == 1 {
					dash = "-"
				}
				out = append(out, candidate{dash + n, usage})
			}
		}
		out = append(out, candidate{"--help", "show help"})
		if cmd == nil {
			out = append(out, candidate{"--version", "print the version, commit and build date"})
		}
		return out, false
	}
	for _, c := range cmds {
		if c.Hidden {
			continue
		}
		for _, n := range c.Names() {
			out = append(out, candidate{n, c.Usage})
		}
	}
	return out, false
}
