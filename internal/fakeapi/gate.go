package fakeapi

import (
	"net/http"
	"sync"
)

// Gate holds one request of the fake at a point of its answer until the
// test releases it, so that a test can act while the request is known to
// be in flight (a refresh half way, a stream after its first event)
// without sleeping. Get one from HoldToken or HoldStream.
type Gate struct {
	arrived     chan struct{}
	release     chan struct{}
	arriveOnce  sync.Once
	releaseOnce sync.Once
	after       int // HoldStream: events sent before the hold
}

func newGate() *Gate {
	return &Gate{arrived: make(chan struct{}), release: make(chan struct{})}
}

// Arrived is closed when the request has reached the gate: for HoldToken
// the refresh token has been spent (or the code used) and the new tokens
// issued; for HoldStream the first events have been written and flushed.
func (g *Gate) Arrived() <-chan struct{} { return g.arrived }

// Release lets the held request go on. Safe to call more than once, and
// before the request arrived (it then goes through without stopping).
func (g *Gate) Release() { g.releaseOnce.Do(func() { close(g.release) }) }

// wait marks the request as arrived and waits for Release; false when the
// request was cancelled first.
func (g *Gate) wait(r *http.Request) bool {
	g.arriveOnce.Do(func() { close(g.arrived) })
	select {
	case <-g.release:
		return true
	case <-r.Context().Done():
		return false
	}
}

// HoldToken makes the next token endpoint request answered normally (not
// by an injected TokenFault) do its work (a refresh
// token is spent and a new pair issued at once, as the real endpoint
// does) and then wait at the returned gate before answering. Requests
// after that one are not held. Close releases any gate still shut.
func (s *Server) HoldToken() *Gate {
	g := newGate()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenGates = append(s.tokenGates, g)
	s.gates = append(s.gates, g)
	return g
}

// HoldStream makes the next streamed /v1/messages answer send its first
// afterEvents events (flushed) and then wait at the returned gate before
// sending the rest. Streams after that one are not held. Close releases
// any gate still shut.
func (s *Server) HoldStream(afterEvents int) *Gate {
	g := newGate()
	g.after = max(afterEvents, 0)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streamGates = append(s.streamGates, g)
	s.gates = append(s.gates, g)
	return g
}

func (s *Server) takeTokenGate() *Gate {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tokenGates) == 0 {
		return nil
	}
	g := s.tokenGates[0]
	s.tokenGates = s.tokenGates[1:]
	return g
}

func (s *Server) takeStreamGate() *Gate {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.streamGates) == 0 {
		return nil
	}
	g := s.streamGates[0]
	s.streamGates = s.streamGates[1:]
	return g
}

// releaseGates opens every gate, so that Close never waits on one.
func (s *Server) releaseGates() {
	s.mu.Lock()
	gates := s.gates
	s.gates = nil
	s.mu.Unlock()
	for _, g := range gates {
		g.Release()
	}
}
