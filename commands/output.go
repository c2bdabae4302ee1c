package commands

import (
	"encoding/json"
	"io"
	"time"
)

// ndjson writes one JSON object per line.
type ndjson struct{ enc *json.Encoder }

func newNDJSON(w io.Writer) *ndjson {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &ndjson{enc}
}

func (n *ndjson) write(v any) error { return n.enc.Encode(v) }

// human formats unix milliseconds for a table, relative to now.
func human(ms int64, now time.Time) string {
	if ms == 0 {
		return "-"
	}
	t := time.UnixMilli(ms)
	d := t.Sub(now).Round(time.Second)
	switch {
	case d > 0:
		return "in " + d.String()
	case d < 0:
		return (-d).String() + " ago"
	}
	return "now"
}
