package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCloudModelMaps(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(path, []byte(`[cloud.bedrock_models]
"claude-sonnet-4-5" = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
[cloud.vertex_models]
"my-model" = "claude-opus-4-5@20251101"
`), 0o600)
	c, err := Load(Source{Path: path, Getenv: e.get})
	if err != nil {
		t.Fatal(err)
	}
	if c.Cloud.BedrockModels["claude-sonnet-4-5"] != "us.anthropic.claude-sonnet-4-5-20250929-v1:0" || c.Cloud.VertexModels["my-model"] != "claude-opus-4-5@20251101" {
		t.Fatalf("cloud %+v", c.Cloud)
	}
	if s := c.Cloud.VertexModels.String(); s != `{"my-model" = "claude-opus-4-5@20251101"}` {
		t.Errorf("String %s", s)
	}

	e["CLAUDEFLARE_CLOUD_BEDROCK_MODELS"] = `{"claude-haiku-4-5": "eu.anthropic.claude-haiku-4-5-20251001-v1:0"}`
	c, err = Load(Source{Path: path, Getenv: e.get})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Cloud.BedrockModels) != 1 || c.Cloud.BedrockModels["claude-haiku-4-5"] != "eu.anthropic.claude-haiku-4-5-20251001-v1:0" {
		t.Errorf("env table %+v", c.Cloud.BedrockModels)
	}

	e["CLAUDEFLARE_CLOUD_BEDROCK_MODELS"] = `["not", "an", "object"]`
	if _, err := Load(Source{Getenv: e.get}); err == nil || !strings.Contains(err.Error(), "CLAUDEFLARE_CLOUD_BEDROCK_MODELS") {
		t.Errorf("bad env: %v", err)
	}
	delete(e, "CLAUDEFLARE_CLOUD_BEDROCK_MODELS")
	os.WriteFile(path, []byte("[cloud.vertex_models]\n\"claude-x\" = \"has space\"\n"), 0o600)
	if _, err := Load(Source{Path: path, Getenv: e.get}); err == nil || !strings.Contains(err.Error(), "cloud.vertex_models") {
		t.Errorf("bad id: %v", err)
	}
}
