package proxy

// requestModel is the top-level "model" of a JSON request body, or ""
// when the body is not a JSON object or names none (modelField).
func requestModel(body []byte) string {
	m, _, _ := modelField(body)
	return m
}
