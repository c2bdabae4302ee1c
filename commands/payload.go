package commands

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/internal/fsutil"
	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
)

func payloadCommand() *cli.Command {
	return &cli.Command{
		Name:  "payload",
		Usage: "export captured request and response payloads",
		Subcommands: []*cli.Command{
			{
				Name:  "export",
				Usage: "print captured payloads as NDJSON, one request a line",
				Description: "Each line has id, timestamp, account, status, request{method,path,headers,body},\n" +
					"response{status,headers,body} and truncated. A JSON body is JSON (so\n" +
					"`jq .response.body.usage` works), an SSE stream or other text is a string,\n" +
					"other bytes are base64 with body_encoding \"base64\". Credentials in headers\n" +
					"are \"[REDACTED]\". Payloads are opened with the master key; with --output\n" +
					"FILE the file appears complete or not at all.",
				Flags: append(logFilterFlags(),
					&cli.StringFlag{Name: "id", Usage: "only the request with id `ID`"},
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write to `FILE` (atomically, mode 0600) instead of stdout"},
				),
				Action: payloadExport,
			},
		},
	}
}

// missingPayload explains why the request f.ID selects exported nothing:
// no such request, one the other filters leave out, or one without a
// captured payload.
func missingPayload(ctx context.Context, db *store.DB, f requestlog.Filter) error {
	exists := func(f requestlog.Filter) (bool, error) {
		found := false
		err := requestlog.List(ctx, db, f, func(*store.Request) error { found = true; return nil })
		return found, err
	}
	found, err := exists(requestlog.Filter{ID: f.ID})
	switch {
	case err != nil:
		return fmt.Errorf("export payloads: %w", err)
	case !found:
		return withHint(fmt.Errorf("no request with id %q in the request log", f.ID), "find ids with `claudeflare requests list`")
	}
	if found, err = exists(f); err != nil {
		return fmt.Errorf("export payloads: %w", err)
	}
	if !found {
		return fmt.Errorf("request %q does not match --since, --until or --account", f.ID)
	}
	return fmt.Errorf("request %q has no captured payload (log.payloads, log.body_paths, or removed by cleanup)", f.ID)
}

func payloadExport(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("payload export takes no arguments (got %q)", c.Args().First())
	}
	f, err := logFilter(c, time.Now())
	if err != nil {
		return err
	}
	f.ID = c.String("id")
	output := c.String("output")
	e := getEnv(c)
	cfg, err := e.config(nil)
	if err != nil {
		return err
	}
	// The key first: without it nothing is written, not even a temp file.
	v, err := e.openVault(c.Context, cfg)
	if err != nil {
		return err
	}
	defer v.DB().Close()
	db, err := e.openLog(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, stop := interruptible(c.Context)
	defer stop()

	var w io.Writer = e.stdout
	var af *fsutil.File
	if output != "" && output != "-" {
		if af, err = fsutil.Create(output, 0o600); err != nil {
			return err
		}
		defer af.Abort()
		w = af
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	n, err := requestlog.WriteNDJSON(ctx, db, f, v.OpenPayload, bw, 0)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil && ctx.Err() != nil {
		err = errors.New("interrupted")
	}
	if err == nil && n == 0 && f.ID != "" {
		// Asked for one request and got nothing: say why, exit 1.
		return missingPayload(ctx, db, f)
	}
	if af == nil && closedPipe(err) {
		return nil
	}
	if err != nil {
		if af != nil {
			return fmt.Errorf("export payloads: %w (%s not written)", err, output)
		}
		return fmt.Errorf("export payloads: %w", err)
	}
	if af != nil {
		if err := af.Commit(); err != nil {
			return fmt.Errorf("export payloads: %w", err)
		}
		e.log.Debug("payloads exported", "rows", n, "file", output)
	}
	return nil
}
