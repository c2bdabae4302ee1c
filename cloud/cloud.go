// Package cloud speaks to the cloud providers that serve Claude: Amazon
// Bedrock (InvokeModel, InvokeModelWithResponseStream, CountTokens; SigV4
// with the AWS SDK's signer) and Google Vertex AI (rawPredict,
// streamRawPredict; OAuth tokens from a service-account key through
// golang.org/x/oauth2/google). A Client takes an Anthropic Messages
// request as the client sent it and gives back an answer the client can
// read as Anthropic's: JSON, server-sent events (Bedrock's binary event
// stream becomes SSE event for event) or an Anthropic error body, with
// the model id the client asked for.
//
// A cloud account's credentials (Key: the AWS keys or the service-account
// key, a JSON document) are a secret: sealed in the vault, read from
// stdin, never in an error or a log line of this package. Its Settings
// (region, project, endpoint) are not.
package cloud

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"unicode"
)

// The account kinds (store.KindBedrock, store.KindVertex).
const (
	Bedrock = "bedrock"
	Vertex  = "vertex"
)

// Is reports whether kind is a cloud kind.
func Is(kind string) bool { return kind == Bedrock || kind == Vertex }

// Settings are a cloud account's non-secret settings, kept as JSON in
// store.Account.Upstream.
type Settings struct {
	Region   string `json:"region"`
	Project  string `json:"project,omitempty"`  // vertex
	Endpoint string `json:"endpoint,omitempty"` // overrides the provider's regional base URL
}

// ParseSettings reads Settings from their JSON ("" gives none).
func ParseSettings(s string) (Settings, error) {
	var st Settings
	if s == "" {
		return st, nil
	}
	if err := json.Unmarshal([]byte(s), &st); err != nil {
		return st, fmt.Errorf("cloud settings: %v", err)
	}
	return st, nil
}

// JSON is st as stored.
func (st Settings) JSON() string {
	b, _ := json.Marshal(st)
	return string(b)
}

var (
	regionRe  = regexp.MustCompile(`^[a-z]{2,}(-[a-z0-9]+)+$`)
	projectRe = regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]$`)
)

// Check checks st for an account of kind: a region like us-east-1 or
// europe-west1 (Vertex also takes "global"), a Google project id for
// Vertex, and an endpoint, when set, that is an https:// URL (http:// only
// to a loopback address, as a test fake is).
func (st Settings) Check(kind string) error {
	switch {
	case st.Region == "":
		return errors.New("--region is required")
	case !regionRe.MatchString(st.Region) && !(kind == Vertex && st.Region == "global"):
		return fmt.Errorf("--region %q is not a region (like us-east-1 or europe-west1)", st.Region)
	case kind == Vertex && st.Project == "":
		return errors.New("--project is required for a Vertex account")
	case kind == Vertex && !projectRe.MatchString(st.Project):
		return fmt.Errorf("--project %q is not a Google Cloud project id", st.Project)
	case kind == Bedrock && st.Project != "":
		return errors.New("--project is for Vertex accounts only")
	}
	if st.Endpoint != "" {
		if err := checkURL(st.Endpoint); err != nil {
			return fmt.Errorf("--endpoint: %v", err)
		}
	}
	return nil
}

// BaseURL is the account's API base URL: the endpoint setting, else the
// provider's regional one.
func (st Settings) BaseURL(kind string) string {
	if st.Endpoint != "" {
		return strings.TrimRight(st.Endpoint, "/")
	}
	if kind == Bedrock {
		return "https://bedrock-runtime." + st.Region + ".amazonaws.com"
	}
	if st.Region == "global" {
		return "https://aiplatform.googleapis.com"
	}
	return "https://" + st.Region + "-aiplatform.googleapis.com"
}

// checkURL accepts an https:// URL, or http:// to a loopback host.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not a base URL (like https://host)", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); h == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
		return fmt.Errorf("%q: use https:// (http:// only to a loopback address)", s)
	}
	return fmt.Errorf("%q: use https://", s)
}

// MaxKeyBytes bounds a credential document on stdin.
const MaxKeyBytes = 16 << 10

// AWSKeys is a Bedrock account's credential document.
type AWSKeys struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	SessionToken    string `json:"session_token,omitempty"`
}

// ServiceAccount is the part of a Google service-account key file that
// is checked; the whole file is what is kept.
type ServiceAccount struct {
	Type         string `json:"type"`
	ClientEmail  string `json:"client_email"`
	PrivateKey   string `json:"private_key"`
	PrivateKeyID string `json:"private_key_id"`
	TokenURI     string `json:"token_uri"`
	ProjectID    string `json:"project_id"`
}

// CheckKey checks the credential document of an account of kind, as read
// from stdin, and returns it compacted (what the vault seals). Its errors
// are one line and never hold any part of the document's secrets.
func CheckKey(kind string, doc []byte) (string, error) {
	if len(doc) > MaxKeyBytes {
		return "", fmt.Errorf("the credentials are more than %d bytes", MaxKeyBytes)
	}
	if len(bytes.TrimSpace(doc)) == 0 {
		return "", errors.New("no credentials on stdin")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, doc); err != nil {
		return "", errors.New("the credentials on stdin are not a JSON object")
	}
	switch kind {
	case Bedrock:
		if _, err := ParseAWSKeys(buf.Bytes()); err != nil {
			return "", err
		}
	case Vertex:
		if _, err := ParseServiceAccount(buf.Bytes()); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("not a cloud kind: %q", kind)
	}
	return buf.String(), nil
}

// ParseAWSKeys reads and checks AWS keys: access_key_id and
// secret_access_key required, session_token optional, each one line
// without spaces; no other field.
func ParseAWSKeys(doc []byte) (AWSKeys, error) {
	var k AWSKeys
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&k); err != nil {
		var f map[string]any
		if json.Unmarshal(doc, &f) != nil {
			return k, errors.New("the AWS credentials are not a JSON object")
		}
		return k, errors.New(`the AWS credentials must be {"access_key_id": ..., "secret_access_key": ..., "session_token": ... (optional)} and nothing else`)
	}
	for _, f := range []struct {
		v, name  string
		required bool
	}{{k.AccessKeyID, "access_key_id", true}, {k.SecretAccessKey, "secret_access_key", true}, {k.SessionToken, "session_token", false}} {
		if f.v == "" {
			if f.required {
				return k, fmt.Errorf("the AWS credentials have no %s", f.name)
			}
			continue
		}
		if !oneWord(f.v) {
			return k, fmt.Errorf("the AWS credentials' %s must be one line without spaces", f.name)
		}
	}
	return k, nil
}

// ParseServiceAccount reads and checks a service-account key: type
// service_account, a client_email, an RSA private_key in PEM, and a
// token_uri (https://, or http:// to a loopback address).
func ParseServiceAccount(doc []byte) (ServiceAccount, error) {
	var sa ServiceAccount
	if err := json.Unmarshal(doc, &sa); err != nil {
		return sa, errors.New("the service-account key is not a JSON object")
	}
	switch {
	case sa.Type != "service_account":
		return sa, errors.New(`the key is not a service-account key ("type": "service_account")`)
	case sa.ClientEmail == "" || !oneWord(sa.ClientEmail):
		return sa, errors.New("the service-account key has no client_email")
	case sa.PrivateKey == "":
		return sa, errors.New("the service-account key has no private_key")
	case sa.TokenURI == "":
		return sa, errors.New("the service-account key has no token_uri")
	}
	if err := checkURL(sa.TokenURI); err != nil {
		return sa, errors.New("the service-account key's token_uri must be an https:// URL")
	}
	block, _ := pem.Decode([]byte(sa.PrivateKey))
	if block == nil {
		return sa, errors.New("the service-account key's private_key is not PEM")
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
			return sa, errors.New("the service-account key's private_key is not an RSA private key")
		}
	}
	return sa, nil
}

func oneWord(s string) bool {
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return s != ""
}
