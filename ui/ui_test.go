package ui_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/ui"
)

// Every answer carries the CSP and nosniff, with the right content type;
// only GET and HEAD are served; /ui goes to /ui/.
func TestHandlerHeaders(t *testing.T) {
	h := ui.Handler()
	for path, ctype := range map[string]string{
		"/ui/":          "text/html; charset=utf-8",
		"/ui/app.js":    "text/javascript; charset=utf-8",
		"/ui/style.css": "text/css; charset=utf-8",
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != 200 || w.Header().Get("Content-Type") != ctype {
			t.Errorf("GET %s: %d %q", path, w.Code, w.Header().Get("Content-Type"))
		}
		if w.Header().Get("Content-Security-Policy") != ui.CSP || w.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: headers %v", path, w.Header())
		}
	}
	for _, c := range []struct {
		method, path string
		status       int
	}{{"POST", "/ui/", 405}, {"GET", "/ui/nope.js", 404}, {"GET", "/ui", 301}} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(c.method, c.path, nil))
		if w.Code != c.status || w.Header().Get("Content-Security-Policy") != ui.CSP {
			t.Errorf("%s %s: %d, want %d (CSP %q)", c.method, c.path, w.Code, c.status, w.Header().Get("Content-Security-Policy"))
		}
	}
}

// The files keep to what the CSP allows and to the rules of the package:
// no inline script, style or handler, nothing from another origin, no
// HTML parsing of data.
func TestFilesStayInsideTheCSP(t *testing.T) {
	read := func(name string) string {
		f, err := ui.Files().Open(name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	html := read("index.html")
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`\sstyle\s*=`),
		regexp.MustCompile(`\son[a-z]+\s*=`),
		regexp.MustCompile(`<style`),
		regexp.MustCompile(`(?i)(src|href)\s*=\s*"(https?:)?//`),
	} {
		if m := bad.FindString(html); m != "" {
			t.Errorf("index.html: %q", m)
		}
	}
	for _, m := range regexp.MustCompile(`<script[^>]*>[^<]*`).FindAllString(html, -1) {
		if !strings.Contains(m, ` src="`) || !strings.HasSuffix(m, ">") {
			t.Errorf("index.html: inline script %q", m)
		}
	}
	// Every file the page names exists.
	for _, m := range regexp.MustCompile(`(?:src|href)="([a-z.]+)"`).FindAllStringSubmatch(html, -1) {
		if _, err := fs.Stat(ui.Files(), m[1]); err != nil {
			t.Errorf("index.html names %s: %v", m[1], err)
		}
	}
	js := read("app.js")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute(\"style\"", "cookie", "localStorage"} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
	for _, name := range []string{"app.js", "style.css"} {
		text := strings.ReplaceAll(read(name), `"http://www.w3.org/2000/svg"`, "") // a namespace, not a fetch
		if m := regexp.MustCompile(`(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/`).FindString(text); m != "" {
			t.Errorf("%s names another origin: %s", name, m)
		}
	}
	if strings.Contains(read("style.css"), "@import") || strings.Contains(read("style.css"), "url(") {
		t.Error("style.css loads something")
	}
}

// The handler serves nothing outside the embedded files.
func TestNoEscape(t *testing.T) {
	srv := httptest.NewServer(http.StripPrefix("", ui.Handler()))
	defer srv.Close()
	for _, p := range []string{"/ui/../ui.go", "/ui/%2e%2e/ui.go", "/ui/static/app.js"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), "package ui") {
			t.Errorf("GET %s served Go source", p)
		}
	}
}
