package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Models is the [models] section: model aliases and the models each
// client key role may use.
//
//	[models]
//	aliases = {"team-fast" = "claude-haiku-4-5", "team-smart" = "claude-opus-4-5"}
//	[models.allow]
//	api = ["claude-haiku-*", "claude-sonnet-*", "team-fast"]
//	viewer = []
//
// An alias is a name clients may send as "model"; the proxy rewrites the
// body's "model" to the alias's model id before forwarding it, and the log
// records that id. An allow list holds model ids, aliases or patterns with
// a trailing "*" (a prefix); an empty or absent list allows every model.
// A request's model must pass its key's role list and the key's own list
// (`apikey create --models`); an alias passes when the alias or its model
// id is listed. CLAUDEFLARE_MODELS_ALIASES and CLAUDEFLARE_MODELS_ALLOW
// set each as a JSON object. A running daemon applies a change on SIGHUP.
type Models struct {
	Aliases ModelAliases `toml:"aliases"`
	Allow   ModelAllow   `toml:"allow"`
}

// ModelAliases maps an alias to the model id it stands for.
type ModelAliases map[string]string

// setEnv reads CLAUDEFLARE_MODELS_ALIASES: a JSON object of strings.
func (m *ModelAliases) setEnv(v string) error {
	out := ModelAliases{}
	dec := json.NewDecoder(bytes.NewReader([]byte(v)))
	if err := dec.Decode(&out); err != nil {
		return fmt.Errorf(`invalid JSON (want {"team-fast": "claude-haiku-4-5"}): %v`, err)
	}
	*m = out
	return nil
}

// String writes m as a TOML inline table, {} when empty (`config show`).
func (m ModelAliases) String() string {
	keys := sortedKeys(m)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = strconv.Quote(k) + " = " + strconv.Quote(m[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// ModelAllow maps a client key role (api, viewer, admin) to the model
// patterns it may use.
type ModelAllow map[string][]string

// setEnv reads CLAUDEFLARE_MODELS_ALLOW: a JSON object of string lists.
func (m *ModelAllow) setEnv(v string) error {
	out := ModelAllow{}
	dec := json.NewDecoder(bytes.NewReader([]byte(v)))
	if err := dec.Decode(&out); err != nil {
		return fmt.Errorf(`invalid JSON (want {"api": ["claude-haiku-*", "team-fast"]}): %v`, err)
	}
	*m = out
	return nil
}

// String writes m as a TOML inline table, {} when empty (`config show`).
func (m ModelAllow) String() string {
	keys := sortedKeys(m)
	parts := make([]string, len(keys))
	for i, k := range keys {
		q := make([]string, len(m[k]))
		for j, p := range m[k] {
			q[j] = strconv.Quote(p)
		}
		parts[i] = strconv.Quote(k) + " = [" + strings.Join(q, ", ") + "]"
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// modelRoles are the roles models.allow may name (access.Role values).
var modelRoles = map[string]bool{"api": true, "viewer": true, "admin": true}

// ValidModelPattern reports why p is not a model allow-list pattern: a
// non-empty word without spaces, whose only "*" is its last character.
// It returns "" for a valid one.
func ValidModelPattern(p string) string {
	if !oneToken(p) {
		return "must be a model id or a pattern without spaces"
	}
	if i := strings.IndexByte(p, '*'); i >= 0 && i != len(p)-1 {
		return `"*" is allowed only at the end (a prefix)`
	}
	return ""
}

// validateModels requires aliases of one word that map to a model id
// (not to another alias), and allow lists of known roles whose patterns
// are valid.
func (c *Config) validateModels() *problem {
	for _, k := range sortedKeys(c.Models.Aliases) {
		v := c.Models.Aliases[k]
		if !oneToken(k) || !oneToken(v) || strings.Contains(k, "*") {
			return bad("models.aliases", "%s = %q: an alias and its model id must be non-empty, without spaces or \"*\"", strconv.Quote(k), v)
		}
		if _, chained := c.Models.Aliases[v]; chained {
			return bad("models.aliases", "%s = %q: an alias must name a model id, not another alias", strconv.Quote(k), v)
		}
	}
	for _, role := range sortedKeys(c.Models.Allow) {
		if !modelRoles[role] {
			return bad("models.allow", "unknown role %q (the roles are api, viewer and admin)", role)
		}
		for _, p := range c.Models.Allow[role] {
			if why := ValidModelPattern(p); why != "" {
				return bad("models.allow", "%s: %q %s", role, p, why)
			}
		}
	}
	return nil
}
