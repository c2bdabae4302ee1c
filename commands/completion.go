package commands

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
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
				script = strings.ReplaceAll(s, "`", "") // usage placeholders
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
			for _, cand := range completions(app, words, cur) {
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

// completions walks words through app's commands and returns what may
// follow: flags when cur starts with "-", else subcommands.
func completions(app *cli.App, words []string, cur string) []candidate {
	flags := app.Flags
	cmds := app.Commands
	var cmd *cli.Command
	takes := false // the previous word is a flag that takes a value
	for _, w := range words {
		if takes {
			takes = false
			continue
		}
		if w == "--" {
			return nil
		}
		if strings.HasPrefix(w, "-") && w != "-" {
			name := strings.TrimLeft(w, "-")
			takes = !strings.Contains(name, "=") && takesValue(flags, name)
			continue
		}
		next := findCommand(cmds, w)
		if next == nil {
			continue // a positional argument
		}
		cmd, flags, cmds = next, next.Flags, next.Subcommands
	}
	if takes {
		return nil // a flag's value: file names
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
		return out
	}
	for _, c := range cmds {
		if c.Hidden {
			continue
		}
		for _, n := range c.Names() {
			out = append(out, candidate{n, c.Usage})
		}
	}
	return out
}
