package fakeapi

import "net/http"

// Requests returns the requests received so far (the newest
// SetMaxRecorded of them), oldest first.
func (s *Server) Requests() []Recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	recs := s.records[max(0, len(s.records)-s.maxRecorded):]
	out := make([]Recorded, len(recs))
	for i, r := range recs {
		out[i] = *r
	}
	return out
}

// ResetRequests forgets the requests recorded so far.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = nil
}

// SetMaxRecorded sets how many requests Requests keeps (the newest);
// 0 turns recording off, for long benchmarks.
func (s *Server) SetMaxRecorded(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxRecorded = max(n, 0)
	s.trimLocked()
}

func (s *Server) trimLocked() {
	if over := len(s.records) - s.maxRecorded; over > 0 {
		s.records = append([]*Recorded(nil), s.records[over:]...)
	}
}

// record stores a new request and returns its entry (nil when recording
// is off). The entry is only touched with s.mu held.
func (s *Server) record(r *http.Request, body []byte) *Recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.maxRecorded == 0 {
		return nil
	}
	rec := &Recorded{
		Time:     s.nowLocked(),
		Method:   r.Method,
		Path:     r.URL.Path,
		RawQuery: r.URL.RawQuery,
		Header:   r.Header.Clone(),
		Body:     body,
	}
	s.records = append(s.records, rec)
	if len(s.records) > 2*s.maxRecorded {
		s.trimLocked()
	}
	return rec
}

func (s *Server) setRecordAccount(rec *Recorded, name string) {
	if rec == nil {
		return
	}
	s.mu.Lock()
	rec.Account = name
	s.mu.Unlock()
}

func (s *Server) setRecordStatus(rec *Recorded, status int) {
	if rec == nil {
		return
	}
	s.mu.Lock()
	rec.Status = status
	s.mu.Unlock()
}
