package commands

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create the data dir, databases and master identity if absent; print the master recipient",
		Description: "init is idempotent: run it again and it prints the same recipient. Other\n" +
			"commands create what they need on first use too.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "pq", Usage: "make the new master identity an age hybrid post-quantum one (AGE-SECRET-KEY-PQ-1...; recipient age1pq1...)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("init takes no arguments")
			}
			e := getEnv(c)
			cfg, err := e.config(nil)
			if err != nil {
				return err
			}
			v, err := e.openVaultPQ(c.Context, cfg, c.Bool("pq"))
			if err != nil {
				return err
			}
			defer v.DB().Close()
			logDB, err := e.openLog(cfg)
			if err != nil {
				return err
			}
			logDB.Close()
			kind, recipients, err := v.Recipients(c.Context)
			if err != nil {
				return err
			}
			if len(recipients) == 0 {
				fmt.Fprintf(e.stderr, "claudeflare: the vault is protected by a %s; it has no public recipient\n", kind)
			}
			for _, r := range recipients {
				fmt.Fprintln(e.stdout, r)
			}
			return nil
		},
	}
}
