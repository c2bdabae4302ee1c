package fakeapi

// The usage fields beyond the four counts: the cache writes split by
// lifetime and the server tools' counts, as Anthropic sends them.

// CacheCreation is usage.cache_creation: the cache writes by lifetime.
type CacheCreation struct {
	Ephemeral5mInputTokens int `json:"ephemeral_5m_input_tokens"`
	Ephemeral1hInputTokens int `json:"ephemeral_1h_input_tokens"`
}

// ServerToolUse is usage.server_tool_use: how many server tool calls the
// message made.
type ServerToolUse struct {
	WebSearchRequests int `json:"web_search_requests"`
	WebFetchRequests  int `json:"web_fetch_requests,omitempty"`
}

// startUsage is the usage of a stream's message_start: the counts known
// at the start (one output token so far) and the cache split, if set.
func startUsage(u Usage) map[string]any {
	m := map[string]any{
		"input_tokens":                u.InputTokens,
		"cache_creation_input_tokens": u.CacheCreationInputTokens,
		"cache_read_input_tokens":     u.CacheReadInputTokens,
		"output_tokens":               min(u.OutputTokens, 1),
	}
	if u.CacheCreation != nil {
		m["cache_creation"] = u.CacheCreation
	}
	return m
}

// deltaUsage is the usage of a stream's message_delta: the output tokens,
// and the server tools' counts if set (they are known at the end).
func deltaUsage(u Usage) map[string]any {
	m := map[string]any{"output_tokens": u.OutputTokens}
	if u.ServerToolUse != nil {
		m["server_tool_use"] = u.ServerToolUse
	}
	return m
}
