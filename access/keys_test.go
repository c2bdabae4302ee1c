package access

import (
	"net/http"
	"strings"
	"testing"
	"unicode"
)

func TestNewKeyShape(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		k, err := NewKey()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(k, KeyPrefix) || len(k) != keyLen || seen[k] {
			t.Fatalf("bad or repeated key %q", k)
		}
		seen[k] = true
		if Credential(http.Header{"X-Api-Key": {k}}) != k || Credential(http.Header{"Authorization": {"Bearer " + k}}) != k {
			t.Fatal("a generated key does not survive the credential headers")
		}
		if p := DisplayPrefix(k); len(p) != displayPrefixLen || !strings.HasPrefix(k, p) {
			t.Fatalf("display prefix %q", p)
		}
	}
}

func TestCredential(t *testing.T) {
	const key = "cf_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	for _, tc := range []struct {
		name string
		h    http.Header
		want string
	}{
		{"none", http.Header{}, ""},
		{"x-api-key", http.Header{"X-Api-Key": {key}}, key},
		{"x-api-key spaces", http.Header{"X-Api-Key": {"  " + key + "\t"}}, key},
		{"bearer", http.Header{"Authorization": {"Bearer " + key}}, key},
		{"bearer lower case", http.Header{"Authorization": {"bearer  " + key}}, key},
		{"basic", http.Header{"Authorization": {"Basic " + key}}, ""},
		{"bearer empty", http.Header{"Authorization": {"Bearer "}}, ""},
		{"bearer two tokens", http.Header{"Authorization": {"Bearer a b"}}, ""},
		{"two x-api-key", http.Header{"X-Api-Key": {key, key}}, ""},
		{"control char", http.Header{"X-Api-Key": {"cf_a\x00b"}}, ""},
		{"non-ascii", http.Header{"X-Api-Key": {"cf_é"}}, ""},
		{"too long", http.Header{"X-Api-Key": {strings.Repeat("a", 513)}}, ""},
		{"client key wins over anthropic key", http.Header{"X-Api-Key": {"sk-ant-xyz"}, "Authorization": {"Bearer " + key}}, key},
		{"x-api-key first otherwise", http.Header{"X-Api-Key": {"other"}, "Authorization": {"Bearer another"}}, "other"},
	} {
		if got := Credential(tc.h); got != tc.want {
			t.Errorf("%s: Credential = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestRoles(t *testing.T) {
	if !RoleAdmin.Can(PermAccountsManage) || RoleViewer.Can(PermAPIRequest) || !RoleAPI.Can(PermAPIRequest) || RoleAPI.Can(PermLogsView) {
		t.Fatal("role permissions wrong")
	}
	for _, p := range []Permission{PermDashboardView, PermLogsView, PermMetricsView} {
		if !RoleViewer.Can(p) {
			t.Errorf("viewer lacks %s", p)
		}
	}
	if _, err := ParseRole("root"); err == nil {
		t.Fatal("unknown role accepted")
	}
}

// FuzzCredentialHeader feeds arbitrary x-api-key and Authorization values
// to the credential parser: it never panics, and what it returns is one
// token of printable ASCII taken from one of the headers.
func FuzzCredentialHeader(f *testing.F) {
	f.Add("cf_abc", "")
	f.Add("", "Bearer cf_abc")
	f.Add("sk-ant-api03-xyz", "Bearer cf_abc")
	f.Add(" cf_x ", "bearer\tcf_y")
	f.Add("", "Bearer  a b")
	f.Add("\x00", "Basic dXNlcjpwYXNz")
	f.Fuzz(func(t *testing.T, apiKey, authz string) {
		h := http.Header{}
		if apiKey != "" {
			h.Set("X-Api-Key", apiKey)
		}
		if authz != "" {
			h.Set("Authorization", authz)
		}
		got := Credential(h)
		if got == "" {
			return
		}
		if len(got) > maxCredentialLen {
			t.Fatalf("credential of %d bytes", len(got))
		}
		for _, r := range got {
			if r > unicode.MaxASCII || !unicode.IsPrint(r) || r == ' ' {
				t.Fatalf("credential %q has a non-printable or space", got)
			}
		}
		if !strings.Contains(apiKey, got) && !strings.Contains(authz, got) {
			t.Fatalf("credential %q from neither header", got)
		}
		if strings.Contains(authz, got) && !strings.Contains(apiKey, got) && !strings.HasPrefix(strings.ToLower(strings.TrimSpace(authz)), "bearer") {
			t.Fatalf("credential %q from a non-bearer Authorization %q", got, authz)
		}
	})
}
