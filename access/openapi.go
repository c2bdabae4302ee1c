package access

import (
	_ "embed"
	"net/http"
	"strconv"
)

// openapiJSON describes every /api route (GET /api/openapi.json serves
// it). Each operation's x-permission names the permission it needs, ""
// for any client key; a test holds the document to the registered routes
// and to apiPermission, so the two cannot drift apart.
//
//go:embed openapi.json
var openapiJSON []byte

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(openapiJSON)))
	w.WriteHeader(http.StatusOK)
	w.Write(openapiJSON)
}
