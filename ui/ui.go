// Package ui is the web dashboard the daemon serves at /ui/: three
// hand-written files (HTML, vanilla JavaScript, CSS) embedded in the
// binary, with no build step and nothing loaded from anywhere else.
//
// The files hold no data: every number on the page comes from the admin
// API (/api/...), which the page fetches with the client key the user
// types in (kept in sessionStorage, sent as x-api-key; no cookies). So the
// guard serves /ui/ itself without a key, and the API routes behind it
// demand the viewer permission (dashboard.view, logs.view) as they always
// do; while no client key exists they are open to loopback clients only.
//
// Every answer carries a strict Content-Security-Policy (CSP below): only
// this origin's script, style and connections, no inline code, no frames.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
)

// CSP is the Content-Security-Policy of every /ui/ answer.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// Prefix is the path the dashboard is served under.
const Prefix = "/ui/"

//go:embed static
var static embed.FS

// Files are the dashboard's files (index.html, app.js, style.css).
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	return sub
}

// Handler serves the dashboard's files under Prefix (GET and HEAD only),
// each with CSP, nosniff and no caching, so a new binary's page is never
// mixed with an old script.
func Handler() http.Handler {
	files := http.StripPrefix(Prefix, http.FileServerFS(Files()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if r.URL.Path == "/ui" {
			http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
			return
		}
		files.ServeHTTP(w, r)
	})
}
