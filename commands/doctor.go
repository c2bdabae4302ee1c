package commands

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/doctor"
)

func doctorCommand() *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "check the config, master key, databases, accounts and disk space",
		Description: "doctor checks that the config is valid, the master key file is private,\n" +
			"the master key opens the vault and the vault's key metadata (master\n" +
			"recipients, data keys, audit key) carries valid MACs made with it (vault_mac),\n" +
			"both databases pass PRAGMA integrity_check\n" +
			"and have a schema this binary knows, no account needs a new login, and the\n" +
			"data dir's file system has room. It only reads, and is safe to run while the\n" +
			"daemon serves. Each problem is one line with a hint; the exit status is 1\n" +
			"when there is one.",
		Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print NDJSON, one check a line: check, status (ok, warn, error, skip), message, hint"}},
		Action: runDoctor,
	}
}

// doctorLine is one check in --json output.
type doctorLine struct {
	Check   string `json:"check"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

func runDoctor(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("doctor takes no arguments")
	}
	e := getEnv(c)
	out := newNDJSON(e.stdout)
	emit := func(r doctor.Result) error {
		if c.Bool("json") {
			return out.write(doctorLine{r.Check, string(r.Status), r.Message, r.Hint})
		}
		// Messages can quote what doctor found on disk (names, paths,
		// errors): escaped like every other table.
		line := fmt.Sprintf("%-5s  %-12s %s", r.Status, r.Check, printable(r.Message))
		if r.Hint != "" && (r.Status == doctor.Error || r.Status == doctor.Warn) {
			line += "; hint: " + printable(r.Hint)
		}
		_, err := fmt.Fprintln(e.stdout, line)
		return err
	}
	cfg, err := e.config(nil)
	if err != nil {
		emit(doctor.Result{Check: "config", Status: doctor.Error, Message: err.Error(),
			Hint: "fix the key named, or see claudeflare.toml(5)"})
		return err
	}
	msg := "no config file: defaults, environment and flags"
	if cfg.File != "" {
		msg = cfg.File + " is valid"
	}
	if err := emit(doctor.Result{Check: "config", Status: doctor.OK, Message: msg}); err != nil {
		return err
	}
	results := doctor.Run(c.Context, doctor.Options{DataDir: cfg.DataDir, Keys: e.keySource(cfg)})
	for _, r := range results {
		if err := emit(r); err != nil {
			return err
		}
	}
	switch n := doctor.Problems(results); n {
	case 0:
		return nil
	case 1:
		return errors.New("doctor found 1 problem")
	default:
		return fmt.Errorf("doctor found %d problems", n)
	}
}
