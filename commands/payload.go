package commands

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/internal/fsutil"
	"github.com/claudeflare/claudeflare/proxy"
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
					"response{status,headers,body,message} and truncated. A JSON body is JSON, an\n" +
					"SSE stream or other text is a string, other bytes are base64 with\n" +
					"body_encoding \"base64\". response.message is the final message (content and\n" +
					"usage), assembled from the stream for streamed answers, so\n" +
					"`jq .response.message.usage` works for both; it is null for errors, other\n" +
					"routes and truncated bodies. Credentials in headers are \"[REDACTED]\".\n" +
					"Payloads are opened with the master key; with --output FILE the file appears\n" +
					"complete or not at all. On a terminal, progress and a summary go to stderr.",
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
	var out io.Writer = bw
	var prog *exportProgress
	// Progress only where it cannot mix with the lines themselves: stderr
	// a terminal, the lines going to a file or a pipe.
	if !e.quiet && isTerminal(e.stderr) && (af != nil || !isTerminal(e.stdout)) {
		prog = &exportProgress{w: bw, out: e.stderr}
		out = prog
	}
	// Each line is redacted once more as a whole: response.message joins
	// a stream's pieces, each redacted alone when captured, so a secret
	// the stream sent in pieces would otherwise come back whole.
	out = redactingWriter{w: out, redact: proxy.RedactFunc(cfg.Redactors())}
	n, err := requestlog.WriteNDJSON(ctx, db, f, v.OpenPayload, out, 0)
	prog.finish()
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
	}
	where := "stdout"
	if af != nil {
		where = output
	}
	e.say("%s exported to %s", plural(n, "request"), where) // on a terminal only: cron mails failures
	return nil
}

// exportProgress passes export lines through to w and redraws a count of
// them on out (a terminal), at most ten times a second.
type exportProgress struct {
	w, out io.Writer
	n      int64
	last   time.Time
	drawn  bool
}

func (p *exportProgress) Write(b []byte) (int, error) {
	// Every line ends in the only newline it has: JSON escapes the rest.
	p.n += int64(bytes.Count(b, []byte{'\n'}))
	if now := time.Now(); now.Sub(p.last) >= 100*time.Millisecond {
		p.last = now
		fmt.Fprintf(p.out, "\rexporting payloads: %d requests ", p.n)
		p.drawn = true
	}
	return p.w.Write(b)
}

// finish clears the progress line, if one was drawn.
func (p *exportProgress) finish() {
	if p != nil && p.drawn {
		fmt.Fprint(p.out, "\r\033[K")
	}
}

// redactingWriter redacts each Write (one NDJSON line) before passing it on.
type redactingWriter struct {
	w      io.Writer
	redact func([]byte) []byte
}

func (r redactingWriter) Write(p []byte) (int, error) {
	if _, err := r.w.Write(r.redact(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}
