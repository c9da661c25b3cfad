// Go net/http backend for the pcapreset reset lab (standard library only; the lab builds
// it at run time with `go build`).  Usage:
//
//	go_server HOST PORT IDLE_TIMEOUT MAX_SECONDS [CERT KEY]
//
// With CERT and KEY it serves HTTPS (crypto/tls; Close sends a close_notify alert).
// http.Server.IdleTimeout = IDLE_TIMEOUT (a Go duration, e.g. 4s).  Logs one JSON object
// per line: listening, accept, request, response, closed (with the state the connection
// was in before and how long it had been idle: "closed idle" when the server's idle
// timeout closed it), shutdown.  SIGTERM: graceful http.Server.Shutdown (idle
// connections are closed at once, in-flight requests finish), then exit.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
)

var mu sync.Mutex

func logEv(event string, kv map[string]interface{}) {
	rec := map[string]interface{}{"ts": float64(time.Now().UnixNano()) / 1e9, "event": event}
	for k, v := range kv {
		rec[k] = v
	}
	b, _ := json.Marshal(rec)
	mu.Lock()
	os.Stdout.Write(append(b, '\n'))
	mu.Unlock()
}

type connInfo struct {
	state     http.ConnState
	idleSince time.Time
	requests  int
}

func main() {
	host, port := os.Args[1], os.Args[2]
	idle, err := time.ParseDuration(os.Args[3])
	if err != nil {
		panic(err)
	}
	maxSec, _ := strconv.ParseFloat(os.Args[4], 64)
	var cmu sync.Mutex
	conns := map[net.Conn]*connInfo{}
	shuttingDown := false
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		logEv("request", map[string]interface{}{"peer": r.RemoteAddr, "method": r.Method, "path": r.URL.Path})
		body := []byte("ok\n")
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
		logEv("response", map[string]interface{}{"peer": r.RemoteAddr, "path": r.URL.Path})
	})
	srv := &http.Server{
		Addr:              net.JoinHostPort(host, port),
		Handler:           mux,
		IdleTimeout:       idle,
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(c net.Conn, s http.ConnState) {
			peer := c.RemoteAddr().String()
			cmu.Lock()
			ci := conns[c]
			if ci == nil {
				ci = &connInfo{}
				conns[c] = ci
			}
			prev := ci.state
			now := time.Now()
			switch s {
			case http.StateNew:
				logEv("accept", map[string]interface{}{"peer": peer})
			case http.StateActive:
				ci.requests++
			case http.StateIdle:
				ci.idleSince = now
			case http.StateClosed, http.StateHijacked:
				kv := map[string]interface{}{"peer": peer, "prev_state": prev.String(), "requests": ci.requests}
				ev := "closed"
				if prev == http.StateIdle {
					idleS := now.Sub(ci.idleSince).Seconds()
					kv["idle_s"] = float64(int(idleS*1000)) / 1000
					if shuttingDown {
						ev = "closed by shutdown"
					} else if idleS >= idle.Seconds()*0.95 {
						ev = "closed idle"
						kv["idle_timeout_s"] = idle.Seconds()
					}
				}
				delete(conns, c)
				cmu.Unlock()
				logEv(ev, kv)
				return
			}
			ci.state = s
			cmu.Unlock()
		},
	}
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		panic(err)
	}
	logEv("listening", map[string]interface{}{"addr": srv.Addr, "pid": os.Getpid(), "idle_timeout_s": idle.Seconds()})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sig:
			cmu.Lock()
			shuttingDown = true
			cmu.Unlock()
			logEv("shutdown", map[string]interface{}{"signal": fmt.Sprint(s)})
		case <-time.After(time.Duration(maxSec * float64(time.Second))):
			logEv("shutdown", map[string]interface{}{"reason": "max-seconds"})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		close(done)
	}()
	var serveErr error
	if len(os.Args) > 6 {
		serveErr = srv.ServeTLS(ln, os.Args[5], os.Args[6])
	} else {
		serveErr = srv.Serve(ln)
	}
	if err := serveErr; err != http.ErrServerClosed {
		logEv("serve_error", map[string]interface{}{"error": err.Error()})
	}
	<-done
	logEv("exit", nil)
}
