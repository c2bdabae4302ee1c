package access

// A client key's gateway settings (issue 20): Relay (the key's requests
// go upstream with the client's own credentials, never a pool account's)
// and Models (an allowlist of model names; nil = any model). Both are
// stored in the key's row (vault migration 0011) and covered by its MAC.
// The allowlist is only stored and carried here: the model policy
// enforces it (Client.Models of a request's context).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// KeySettings are what a key is created with besides its name and role.
type KeySettings struct {
	Budgets []Budget
	Relay   bool
	// Models is the model allowlist (ParseModels); nil = any model.
	Models []string
}

// KeyUpdate is a change to a live key's settings: a nil field is left as
// it is. Models pointing at a nil slice removes the allowlist (any
// model); Budgets pointing at a nil slice removes every budget.
type KeyUpdate struct {
	Budgets *[]Budget
	Relay   *bool
	Models  *[]string
}

// ErrBadModels is returned for a model allowlist that cannot be stored.
var ErrBadModels = errors.New("invalid model list")

// maxModels bounds an allowlist's length; maxModelLen a name's.
const (
	maxModels   = 100
	maxModelLen = 128
)

// ParseModels reads a model allowlist: names such as claude-sonnet-4-5 or
// an alias, each 1 to 128 letters, digits or any of . _ - : @ / *, at
// most 100 of them; items may be comma lists ("a,b"), spaces around
// names do not count, and duplicates are dropped (the first kept). An
// empty list is an error: "any model" is no allowlist (nil), not an empty
// one.
func ParseModels(items []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, item := range items {
		for _, m := range strings.Split(item, ",") {
			m = strings.TrimSpace(m)
			if m == "" {
				return nil, fmt.Errorf("%w: an empty model name", ErrBadModels)
			}
			if err := checkModelName(m); err != nil {
				return nil, err
			}
			if !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no model named", ErrBadModels)
	}
	if len(out) > maxModels {
		return nil, fmt.Errorf("%w: %d models, at most %d", ErrBadModels, len(out), maxModels)
	}
	return out, nil
}

func checkModelName(m string) error {
	if len(m) > maxModelLen {
		return fmt.Errorf("%w: a model name longer than %d characters", ErrBadModels, maxModelLen)
	}
	for _, r := range m {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-:@/*", r)
		if !ok {
			return fmt.Errorf("%w: model name %q: use letters, digits, '.', '_', '-', ':', '@', '/' or '*'", ErrBadModels, m)
		}
	}
	return nil
}

// FormatModels is an allowlist for people: "any" for none.
func FormatModels(ms []string) string {
	if ms == nil {
		return "any"
	}
	return strings.Join(ms, ",")
}

// encodeModels is the models column's text: nil for no allowlist.
func encodeModels(ms []string) (*string, error) {
	if ms == nil {
		return nil, nil
	}
	if _, err := ParseModels(ms); err != nil {
		return nil, err
	}
	b, err := json.Marshal(ms)
	if err != nil {
		return nil, err
	}
	s := string(b)
	return &s, nil
}

// decodeModels reads the models column (nil: any model).
func decodeModels(s *string) ([]string, error) {
	if s == nil {
		return nil, nil
	}
	var ms []string
	if err := json.Unmarshal([]byte(*s), &ms); err != nil {
		return nil, fmt.Errorf("read models: %w", err)
	}
	if ms == nil {
		return nil, fmt.Errorf("read models: %w: not a list", ErrBadModels)
	}
	for _, m := range ms {
		if err := checkModelName(m); err != nil {
			return nil, err
		}
	}
	return ms, nil
}

// decodeSettings reads a row's settings; an error means the row cannot
// be trusted (it fails authentication too).
func decodeSettings(r store.ClientKey) (KeySettings, error) {
	budgets, err := decodeBudgets(r.Budgets)
	if err != nil {
		return KeySettings{}, err
	}
	models, err := decodeModels(r.Models)
	if err != nil {
		return KeySettings{}, err
	}
	return KeySettings{Budgets: budgets, Relay: r.Relay, Models: models}, nil
}

// settingsDetail describes settings for the audit log.
func settingsDetail(s KeySettings) string {
	var parts []string
	if len(s.Budgets) > 0 {
		parts = append(parts, "budgets "+FormatBudgets(s.Budgets))
	}
	if s.Relay {
		parts = append(parts, "relay")
	}
	if s.Models != nil {
		parts = append(parts, "models "+FormatModels(s.Models))
	}
	return strings.Join(parts, ", ")
}

// UpdateKey changes the settings of the live client key with the given
// name (the fields of u that are set) and records it in the audit log,
// in one transaction; a running daemon applies them within its poll
// interval. An unknown name gives store.ErrNoClientKey; a row that failed
// authentication, ErrTamperedKey (revoke it instead). Nothing is stored
// when any part is invalid.
func UpdateKey(ctx context.Context, db *store.DB, auditKey []byte, name string, u KeyUpdate, actor string, now time.Time) (KeyInfo, error) {
	if err := audit.CheckKey(auditKey); err != nil {
		return KeyInfo{}, fmt.Errorf("update client key: %w", err)
	}
	var encBudgets, encModels *string
	var err error
	if u.Budgets != nil {
		if encBudgets, err = encodeBudgets(*u.Budgets); err != nil {
			return KeyInfo{}, err
		}
	}
	if u.Models != nil {
		if encModels, err = encodeModels(*u.Models); err != nil {
			return KeyInfo{}, err
		}
	}
	var k store.ClientKey
	err = store.Tx(ctx, db, func(tx *sqlx.Tx) error {
		var err error
		if k, err = store.LiveClientKeyTx(ctx, tx, name); err != nil {
			return err
		}
		old, decErr := decodeSettings(k)
		if !authenticRow(auditKey, k) || decErr != nil {
			return fmt.Errorf("%w: %q", ErrTamperedKey, name)
		}
		var changes []string
		if u.Budgets != nil {
			k.Budgets = encBudgets
			changes = append(changes, fmt.Sprintf("budgets set to %s (were %s)", FormatBudgets(*u.Budgets), FormatBudgets(old.Budgets)))
		}
		if u.Relay != nil {
			k.Relay = *u.Relay
			changes = append(changes, fmt.Sprintf("relay %s (was %s)", onOff(*u.Relay), onOff(old.Relay)))
		}
		if u.Models != nil {
			k.Models = encModels
			changes = append(changes, fmt.Sprintf("models set to %s (were %s)", FormatModels(*u.Models), FormatModels(old.Models)))
		}
		if err := store.SetClientKeySettings(ctx, tx, k); err != nil {
			return err
		}
		if err := store.SetClientKeyMAC(ctx, tx, k.ID, vault.ClientKeyMAC(rowKey(auditKey), k)); err != nil {
			return err
		}
		return audit.Append(ctx, tx, auditKey, now, actor, ActionClientKeyUpdated,
			fmt.Sprintf("client key %q (%s...) %s", name, k.Prefix, strings.Join(changes, "; ")))
	})
	if err != nil {
		return KeyInfo{}, fmt.Errorf("update client key: %w", err)
	}
	return keyInfo(k), nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
