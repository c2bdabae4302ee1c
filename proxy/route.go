package proxy

import (
	"net/http"

	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/internal/target"
)

// canonical is the proxy's own gate, in front of its mux: a request whose
// target is not canonical (target.Path), or whose canonical path is not
// the one a guard authorized (target.WithAuthorized), is refused before
// anything routes it.
func (s *Server) canonical(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := target.Authorized(r); err != nil {
			w.Header().Set(apierr.RequestIDHeader, s.ids.Next(s.now()))
			RefuseTarget(w, err)
			return
		}
		// Without a guard in front, forward finds the same path again
		// (target.Path is a pure function of the request).
		next.ServeHTTP(w, r)
	})
}

// RefuseTarget answers a refused request target: 400 in Anthropic's
// error shape, x-should-retry: false.
func RefuseTarget(w http.ResponseWriter, err error) {
	apierr.Write(w, apierr.Reply{Status: http.StatusBadRequest, Type: apierr.InvalidRequest, Message: err.Error(), Retry: apierr.RetryNo})
}
