// httpload: a tiny HTTP/1.1 server and closed-loop load generator (standard library only) for Mizzen's
// benchmarks, fast enough that the proxies, not the client or the backend, bound the throughput.
//
//	httpload serve ADDR                                    answers every request 200 with a 64-byte body
//	httpload load -proxy http://IP:PORT -c 4 -d 3s URL     prints "requests errors seconds"
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

var body = []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n")

func serve(addr string) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("content-type", "text/plain")
		w.Write(body)
	})
	if err := http.ListenAndServe(addr, h); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func load(args []string) {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	proxy := fs.String("proxy", "", "HTTP proxy (the client sidecar's outbound listener)")
	conc := fs.Int("c", 4, "concurrent connections")
	dur := fs.Duration("d", 3*time.Second, "duration")
	fs.Parse(args)
	target := fs.Arg(0)
	tr := &http.Transport{MaxIdleConnsPerHost: *conc, MaxConnsPerHost: *conc, DisableCompression: true}
	if *proxy != "" {
		p, err := url.Parse(*proxy)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		tr.Proxy = http.ProxyURL(p)
	}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var ok, bad atomic.Int64
	deadline := time.Now().Add(*dur)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < *conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				resp, err := client.Get(target)
				if err != nil {
					bad.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					ok.Add(1)
				} else {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("%d %d %.3f\n", ok.Load(), bad.Load(), time.Since(start).Seconds())
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: httpload serve ADDR | httpload load [-proxy URL] [-c N] [-d DUR] URL")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2])
	case "load":
		load(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
