package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// Cloud is the [cloud] section: the model id tables of the cloud accounts
// (Amazon Bedrock, Google Vertex AI). Each maps the model id a client
// asks for to the provider's id, over the built-in tables (package cloud):
//
//	[cloud.bedrock_models]
//	"claude-sonnet-4-5" = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
//	[cloud.vertex_models]
//	"claude-sonnet-4-5" = "claude-sonnet-4-5@20250929"
//
// CLAUDEFLARE_CLOUD_BEDROCK_MODELS and CLAUDEFLARE_CLOUD_VERTEX_MODELS set
// a whole table as a JSON object. Read when the daemon starts.
type Cloud struct {
	BedrockModels ModelMap `toml:"bedrock_models"`
	VertexModels  ModelMap `toml:"vertex_models"`
}

// ModelMap maps a client's model id to a provider's.
type ModelMap map[string]string

// setEnv reads a table as a JSON object of strings.
func (m *ModelMap) setEnv(v string) error {
	dec := json.NewDecoder(bytes.NewReader([]byte(v)))
	out := ModelMap{}
	if err := dec.Decode(&out); err != nil {
		return fmt.Errorf(`invalid JSON (want {"claude-sonnet-4-5": "<provider model id>"}): %v`, err)
	}
	*m = out
	return nil
}

// String writes m as a TOML inline table, {} when empty (`config show`).
func (m ModelMap) String() string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = strconv.Quote(k) + " = " + strconv.Quote(m[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// validateCloud requires non-empty model ids of one word each.
func (c *Config) validateCloud() *problem {
	for _, t := range []struct {
		key string
		m   ModelMap
	}{{"cloud.bedrock_models", c.Cloud.BedrockModels}, {"cloud.vertex_models", c.Cloud.VertexModels}} {
		for k, v := range t.m {
			if !oneToken(k) || !oneToken(v) {
				return bad(t.key, "%s.%s = %q: model ids must be non-empty, without spaces", t.key, strconv.Quote(k), v)
			}
		}
	}
	return nil
}

func oneToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
