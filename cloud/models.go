package cloud

import (
	"maps"
	"regexp"
	"strings"
)

// BuiltinBedrock maps Anthropic model ids (and their aliases) to Bedrock
// model ids. Models that Bedrock serves on demand only through a
// cross-region inference profile need it named in the config instead
// ([cloud.bedrock_models] "claude-sonnet-4-5" = "us.anthropic.claude-...").
var BuiltinBedrock = map[string]string{
	"claude-opus-4-5-20251101":   "anthropic.claude-opus-4-5-20251101-v1:0",
	"claude-opus-4-5":            "anthropic.claude-opus-4-5-20251101-v1:0",
	"claude-sonnet-4-5-20250929": "anthropic.claude-sonnet-4-5-20250929-v1:0",
	"claude-sonnet-4-5":          "anthropic.claude-sonnet-4-5-20250929-v1:0",
	"claude-haiku-4-5-20251001":  "anthropic.claude-haiku-4-5-20251001-v1:0",
	"claude-haiku-4-5":           "anthropic.claude-haiku-4-5-20251001-v1:0",
	"claude-opus-4-1-20250805":   "anthropic.claude-opus-4-1-20250805-v1:0",
	"claude-opus-4-1":            "anthropic.claude-opus-4-1-20250805-v1:0",
	"claude-opus-4-20250514":     "anthropic.claude-opus-4-20250514-v1:0",
	"claude-opus-4-0":            "anthropic.claude-opus-4-20250514-v1:0",
	"claude-sonnet-4-20250514":   "anthropic.claude-sonnet-4-20250514-v1:0",
	"claude-sonnet-4-0":          "anthropic.claude-sonnet-4-20250514-v1:0",
	"claude-3-7-sonnet-20250219": "anthropic.claude-3-7-sonnet-20250219-v1:0",
	"claude-3-7-sonnet-latest":   "anthropic.claude-3-7-sonnet-20250219-v1:0",
	"claude-3-5-haiku-20241022":  "anthropic.claude-3-5-haiku-20241022-v1:0",
	"claude-3-5-haiku-latest":    "anthropic.claude-3-5-haiku-20241022-v1:0",
	"claude-3-5-sonnet-20241022": "anthropic.claude-3-5-sonnet-20241022-v2:0",
	"claude-3-5-sonnet-20240620": "anthropic.claude-3-5-sonnet-20240620-v1:0",
	"claude-3-haiku-20240307":    "anthropic.claude-3-haiku-20240307-v1:0",
}

// BuiltinVertex maps Anthropic model ids (and their aliases) to Vertex AI
// model ids.
var BuiltinVertex = map[string]string{
	"claude-opus-4-5-20251101":   "claude-opus-4-5@20251101",
	"claude-opus-4-5":            "claude-opus-4-5@20251101",
	"claude-sonnet-4-5-20250929": "claude-sonnet-4-5@20250929",
	"claude-sonnet-4-5":          "claude-sonnet-4-5@20250929",
	"claude-haiku-4-5-20251001":  "claude-haiku-4-5@20251001",
	"claude-haiku-4-5":           "claude-haiku-4-5@20251001",
	"claude-opus-4-1-20250805":   "claude-opus-4-1@20250805",
	"claude-opus-4-1":            "claude-opus-4-1@20250805",
	"claude-opus-4-20250514":     "claude-opus-4@20250514",
	"claude-opus-4-0":            "claude-opus-4@20250514",
	"claude-sonnet-4-20250514":   "claude-sonnet-4@20250514",
	"claude-sonnet-4-0":          "claude-sonnet-4@20250514",
	"claude-3-7-sonnet-20250219": "claude-3-7-sonnet@20250219",
	"claude-3-7-sonnet-latest":   "claude-3-7-sonnet@20250219",
	"claude-3-5-haiku-20241022":  "claude-3-5-haiku@20241022",
	"claude-3-5-haiku-latest":    "claude-3-5-haiku@20241022",
	"claude-3-5-sonnet-20241022": "claude-3-5-sonnet-v2@20241022",
	"claude-3-5-sonnet-20240620": "claude-3-5-sonnet@20240620",
	"claude-3-haiku-20240307":    "claude-3-haiku@20240307",
}

// Models maps the model id a client asked for to each provider's id: the
// built-in tables with the config's entries over them.
type Models struct {
	bedrock, vertex map[string]string
}

// NewModels is the built-in tables with bedrock's and vertex's entries
// added or replacing theirs (nil: none).
func NewModels(bedrock, vertex map[string]string) *Models {
	m := &Models{bedrock: maps.Clone(BuiltinBedrock), vertex: maps.Clone(BuiltinVertex)}
	maps.Copy(m.bedrock, bedrock)
	maps.Copy(m.vertex, vertex)
	return m
}

var datedRe = regexp.MustCompile(`^(claude-[a-z0-9-]+?)-(\d{8})$`)

// ID is the provider's id of model for an account of kind. A model not in
// the table is taken as the provider's own id when it looks like one (a
// Bedrock id has a "." or ":", a Vertex id an "@"), else named by the
// provider's rule: "anthropic.<id>-v1:0" on Bedrock, "<name>@<date>" on
// Vertex.
func (m *Models) ID(kind, model string) string {
	if m == nil {
		m = defaultModels
	}
	switch kind {
	case Bedrock:
		if id, ok := m.bedrock[model]; ok {
			return id
		}
		if strings.ContainsAny(model, ".:") {
			return model
		}
		return "anthropic." + model + "-v1:0"
	case Vertex:
		if id, ok := m.vertex[model]; ok {
			return id
		}
		if strings.Contains(model, "@") {
			return model
		}
		if p := datedRe.FindStringSubmatch(model); p != nil {
			return p[1] + "@" + p[2]
		}
		return model
	}
	return model
}

var defaultModels = NewModels(nil, nil)
