package access

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// recordMux lists the routes registerAPI registers.
type recordMux map[string]func(http.ResponseWriter, *http.Request)

func (m recordMux) HandleFunc(p string, h func(http.ResponseWriter, *http.Request)) { m[p] = h }

// openapi.json names every admin route with its method and permission,
// and nothing else: the routes registered, each one's method (asked of
// its method wrapper, which answers 405 with Allow to any other), and the
// permission the guard demands for its path.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapiJSON, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	documented := map[string]*string{} // "METHOD pattern" -> x-permission
	for p, item := range doc.Paths {
		for m, raw := range item {
			if m == "parameters" {
				continue
			}
			var op struct {
				Perm *string `json:"x-permission"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", m, p, err)
			}
			documented[strings.ToUpper(m)+" "+p] = op.Perm
		}
	}

	rec := recordMux{}
	(&Guard{}).registerAPI(rec)
	var registered []string
	for p, h := range rec {
		w := httptest.NewRecorder()
		h(w, httptest.NewRequest("PROBE", p, nil))
		m := w.Header().Get("Allow")
		if w.Code != http.StatusMethodNotAllowed || m == "" {
			t.Fatalf("%s: not wrapped in method (answered %d)", p, w.Code)
		}
		registered = append(registered, m+" "+p)
	}
	for _, r := range registered {
		if _, ok := documented[r]; !ok {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for r, perm := range documented {
		if !slices.Contains(registered, r) {
			t.Errorf("openapi.json names %s, which is not a route", r)
			continue
		}
		path := examplePath.Replace(strings.SplitN(r, " ", 2)[1])
		switch {
		case perm == nil:
			t.Errorf("%s: no x-permission", r)
		case Permission(*perm) != apiPermission(path):
			t.Errorf("%s: x-permission %q, the guard demands %q", r, *perm, apiPermission(path))
		}
	}
	// The daemon's mux serves each documented path with its own pattern.
	mux := (&Guard{}).apiRoutes().(*http.ServeMux)
	for r := range documented {
		m, p, _ := strings.Cut(r, " ")
		req := httptest.NewRequest(m, examplePath.Replace(p), nil)
		if _, pat := mux.Handler(req); pat != p {
			t.Errorf("%s is served by pattern %q", r, pat)
		}
	}
}

// examplePath fills a route pattern's wildcards with values a client
// would send, so the guard's permission is asked of a real path.
var examplePath = strings.NewReplacer("{name}", "work", "{id}", "01JABCDEFGHJKMNPQRSTVWXYZ0")
