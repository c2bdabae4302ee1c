package fakeapi

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
)

// Message batches and files, minimal: each lives on the account that
// created it, and any other account gets 404 not_found_error for it, as
// Anthropic answers.
//
//	POST /v1/messages/batches                    -> {"id":"msgbatch_...","type":"message_batch",...}
//	GET  /v1/messages/batches/{id}[/results]     -> the batch, on its account
//	POST /v1/messages/batches/{id}/cancel        -> the batch, on its account
//	POST /v1/files                               -> {"id":"file_...","size_bytes":N,"sha256":"..."}
//	GET  /v1/files/{id}[/content], DELETE /v1/files/{id}
//
// An id the fake never made gets the default echo, as any other path.
// A file's answer carries the size and SHA-256 of the body the fake
// received, so a test can check an upload arrived whole.

// Paths of the batch and file endpoints.
const (
	BatchesPath = "/v1/messages/batches"
	FilesPath   = "/v1/files"
)

// OwnerOf returns the account a batch or file id was created through
// ("" = unknown).
func (s *Server) OwnerOf(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owned[id]
}

// serveOwned answers the batch and file endpoints; false for any other
// path.
func (s *Server) serveOwned(w http.ResponseWriter, r *http.Request, body []byte, name string, unified map[string]string) bool {
	p := r.URL.Path
	var base, prefix string
	switch {
	case p == BatchesPath || strings.HasPrefix(p, BatchesPath+"/"):
		base, prefix = BatchesPath, "msgbatch_"
	case p == FilesPath || strings.HasPrefix(p, FilesPath+"/"):
		base, prefix = FilesPath, "file_"
	default:
		return false
	}
	if p == base {
		if r.Method != http.MethodPost {
			return false // listings: the default echo
		}
		id := randomID(prefix)
		s.mu.Lock()
		if s.owned == nil {
			s.owned = map[string]string{}
		}
		s.owned[id] = name
		s.mu.Unlock()
		sum := sha256.Sum256(body)
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "type": ownedType(base), "processing_status": "in_progress",
			"size_bytes": len(body), "sha256": hex.EncodeToString(sum[:]), "account": name}, unified)
		return true
	}
	id, sub, _ := strings.Cut(strings.TrimPrefix(p, base+"/"), "/")
	s.mu.Lock()
	owner, ok := s.owned[id]
	if ok && owner == name && r.Method == http.MethodDelete && sub == "" {
		delete(s.owned, id)
	}
	s.mu.Unlock()
	if !ok {
		return false // an id the fake never made: the default echo
	}
	if owner != name {
		writeAPIError(w, http.StatusNotFound, "not_found_error", "Not found: "+id, unified)
		return true
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "type": ownedType(base), "processing_status": "ended", "account": name, "sub": sub}, unified)
	return true
}

func ownedType(base string) string {
	if base == FilesPath {
		return "file"
	}
	return "message_batch"
}
