package fakecloud

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"
)

// Paths of the Vertex fake.
const VertexTokenPath = "/token"

// Vertex is a fake of Google Vertex AI's Anthropic publisher endpoints
// and of Google's OAuth token endpoint.
type Vertex struct {
	URL     string
	Project string
	Region  string
	Email   string

	key *rsa.PrivateKey
	srv *httptest.Server
	recorder
	tokens map[string]time.Time // issued access tokens and their expiry
	grants int
}

// NewVertex starts a Vertex fake for project and region with a fresh
// service-account key (KeyJSON).
func NewVertex(project, region string) *Vertex {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	v := &Vertex{Project: project, Region: region, Email: "claudeflare-test@" + project + ".iam.gserviceaccount.com",
		key: k, tokens: map[string]time.Time{}}
	v.srv = httptest.NewServer(http.HandlerFunc(v.serve))
	v.URL = v.srv.URL
	return v
}

// Close stops the server.
func (v *Vertex) Close() { v.srv.Close() }

// KeyJSON is the service-account key file of the fake's account, its
// token_uri the fake's token endpoint.
func (v *Vertex) KeyJSON() []byte {
	der, _ := x509.MarshalPKCS8PrivateKey(v.key)
	b, _ := json.MarshalIndent(map[string]string{
		"type": "service_account", "project_id": v.Project, "private_key_id": randHex(20),
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": v.Email, "client_id": "1234567890",
		"auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": v.URL + VertexTokenPath,
	}, "", "  ")
	return b
}

// PrivateKeyPEM is the key's PEM, to search for in places it must not be.
func (v *Vertex) PrivateKeyPEM() string {
	der, _ := x509.MarshalPKCS8PrivateKey(v.key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// Tokens lists the access tokens issued so far.
func (v *Vertex) Tokens() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []string
	for t := range v.tokens {
		out = append(out, t)
	}
	return out
}

// Grants is how many token grants the fake has answered.
func (v *Vertex) Grants() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.grants
}

// RevokeTokens makes every access token issued so far invalid.
func (v *Vertex) RevokeTokens() {
	v.mu.Lock()
	clear(v.tokens)
	v.mu.Unlock()
}

// Exhaust makes the next n answers 429 RESOURCE_EXHAUSTED.
func (v *Vertex) Exhaust(n int) { v.failNext(n) }

func (v *Vertex) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == VertexTokenPath {
		v.token(w, r)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	rec := Request{Header: r.Header.Clone()}
	prefix := "/v1/projects/" + v.Project + "/locations/" + v.Region + "/publishers/anthropic/models/"
	model, op, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, prefix), ":")
	if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, prefix) || !ok || (op != "rawPredict" && op != "streamRawPredict") {
		googleError(w, http.StatusNotFound, "NOT_FOUND", "The requested URL was not found on this server.")
		return
	}
	rec.Model, rec.Op = model, op
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	v.mu.Lock()
	exp, issued := v.tokens[tok]
	v.mu.Unlock()
	if !issued || time.Now().After(exp) {
		rec.Rejects = "bad token"
		v.record(rec)
		googleError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token.")
		return
	}
	if why := checkBody(body, VertexVersion, false, false); why != "" {
		rec.Rejects = why
		v.record(rec)
		googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", why)
		return
	}
	json.Unmarshal(body, &rec.Body)
	stream, _ := rec.Body["stream"].(bool)
	if stream != (op == "streamRawPredict") {
		rec.Rejects = "stream does not match the method"
		v.record(rec)
		googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "stream must be true for streamRawPredict and absent for rawPredict")
		return
	}
	v.record(rec)
	if !strings.Contains(model, "@") {
		googleError(w, http.StatusNotFound, "NOT_FOUND", "Publisher Model `"+model+"` not found.")
		return
	}
	if v.failing() {
		googleError(w, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED",
			"Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model with base model: anthropic-claude. Please submit a quota increase request.")
		return
	}
	if !stream {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(message(anthropicModel(model), "vertex"))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	for _, ev := range streamEvents(anthropicModel(model), "vertex") {
		b, _ := json.Marshal(ev)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev["type"], b)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
}

// token answers the JWT bearer grant (RFC 7523): the assertion must be
// signed (RS256) by the service account's key, issued by its email, for
// this endpoint, with the cloud-platform scope, not expired.
func (v *Vertex) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.Method != http.MethodPost {
		oauthError(w, "invalid_request", "POST a form")
		return
	}
	if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		oauthError(w, "unsupported_grant_type", "want the JWT bearer grant")
		return
	}
	if why := v.checkAssertion(r.PostForm.Get("assertion")); why != "" {
		oauthError(w, "invalid_grant", why)
		return
	}
	tok := "ya29.fake-" + randHex(24)
	v.mu.Lock()
	v.tokens[tok] = time.Now().Add(time.Hour)
	v.grants++
	v.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "expires_in": 3599, "token_type": "Bearer"})
}

func (v *Vertex) checkAssertion(a string) string {
	parts := strings.Split(a, ".")
	if len(parts) != 3 {
		return "the assertion is not a JWT"
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if hb, err := base64.RawURLEncoding.DecodeString(parts[0]); err != nil || json.Unmarshal(hb, &hdr) != nil || hdr.Alg != "RS256" {
		return "the assertion's header is not RS256"
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "bad signature encoding"
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(&v.key.PublicKey, crypto.SHA256, sum[:], sig) != nil {
		return "Invalid JWT Signature."
	}
	var c struct {
		Iss   string `json:"iss"`
		Scope string `json:"scope"`
		Aud   string `json:"aud"`
		Exp   int64  `json:"exp"`
		Iat   int64  `json:"iat"`
	}
	if cb, err := base64.RawURLEncoding.DecodeString(parts[1]); err != nil || json.Unmarshal(cb, &c) != nil {
		return "bad claims"
	}
	now := time.Now().Unix()
	switch {
	case c.Iss != v.Email:
		return "iss is not the service account"
	case c.Aud != v.URL+VertexTokenPath:
		return "aud is not this token endpoint"
	case !strings.Contains(" "+c.Scope+" ", " https://www.googleapis.com/auth/cloud-platform "):
		return "scope lacks cloud-platform"
	case c.Exp < now || c.Iat > now+300 || c.Exp-c.Iat > 3600:
		return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
	}
	return ""
}

func oauthError(w http.ResponseWriter, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// googleError writes an error the way Google APIs do.
func googleError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": status, "message": msg, "status": code}})
}
