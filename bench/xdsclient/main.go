// Command xdsclient simulates many Envoy ADS streams against one xDS server, for bench_xds_streams.py.
//
// Each stream subscribes like Envoy (CDS and LDS wildcard, EDS by cluster name, RDS "9080") over
// state-of-the-world or delta ADS and ACKs every response. Streams share a few HTTP/2 connections.
// On SIGTERM or SIGINT it prints one JSON line of totals (responses and resources per type) and exits.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const (
	typeCluster  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	typeEndpoint = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	typeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"
	typeRoute    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
)

var typeOrder = []string{typeCluster, typeEndpoint, typeListener, typeRoute}

type counters struct {
	responses [4]atomic.Int64
	resources [4]atomic.Int64
	removed   [4]atomic.Int64
	errors    atomic.Int64
	connected atomic.Int64
}

func typeIndex(t string) int {
	for i, u := range typeOrder {
		if u == t {
			return i
		}
	}
	return 0
}

func nodeID(i int) string {
	return fmt.Sprintf("sidecar~10.%d.%d.1~bench-%d.default~default.svc.cluster.local", i/250, i%250, i)
}

func subscriptions(clusters int) map[string][]string {
	eds := make([]string, clusters)
	for i := range eds {
		eds[i] = fmt.Sprintf("outbound|9080||svc%d.default.svc.cluster.local", i)
	}
	return map[string][]string{typeCluster: nil, typeEndpoint: eds, typeListener: nil, typeRoute: {"9080"}}
}

func runSotw(ctx context.Context, conn *grpc.ClientConn, i int, subs map[string][]string, c *counters) error {
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	for k, t := range typeOrder {
		req := &discovery.DiscoveryRequest{TypeUrl: t, ResourceNames: subs[t]}
		if k == 0 {
			req.Node = &core.Node{Id: nodeID(i)}
		}
		if err := stream.Send(req); err != nil {
			return err
		}
	}
	c.connected.Add(1)
	defer c.connected.Add(-1)
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		k := typeIndex(resp.TypeUrl)
		c.responses[k].Add(1)
		c.resources[k].Add(int64(len(resp.Resources)))
		err = stream.Send(&discovery.DiscoveryRequest{TypeUrl: resp.TypeUrl, VersionInfo: resp.VersionInfo,
			ResponseNonce: resp.Nonce, ResourceNames: subs[resp.TypeUrl]})
		if err != nil {
			return err
		}
	}
}

func runDelta(ctx context.Context, conn *grpc.ClientConn, i int, subs map[string][]string, c *counters) error {
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	for k, t := range typeOrder {
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: t, ResourceNamesSubscribe: subs[t]}
		if k == 0 {
			req.Node = &core.Node{Id: nodeID(i)}
		}
		if err := stream.Send(req); err != nil {
			return err
		}
	}
	c.connected.Add(1)
	defer c.connected.Add(-1)
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		k := typeIndex(resp.TypeUrl)
		c.responses[k].Add(1)
		c.resources[k].Add(int64(len(resp.Resources)))
		c.removed[k].Add(int64(len(resp.RemovedResources)))
		if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resp.TypeUrl,
			ResponseNonce: resp.Nonce}); err != nil {
			return err
		}
	}
}

func main() {
	target := flag.String("target", "127.0.0.1:15010", "xDS server host:port")
	first := flag.Int("first", 0, "index of the first simulated node")
	count := flag.Int("streams", 1000, "number of streams")
	clusters := flag.Int("clusters", 20, "EDS names each stream subscribes to")
	delta := flag.Bool("delta", false, "delta ADS instead of state-of-the-world")
	perConn := flag.Int("streams-per-conn", 100, "streams sharing one HTTP/2 connection")
	retries := flag.Int("retries", 20, "reconnects per stream before giving up")
	rate := flag.Int("connect-rate", 1000, "new streams opened per second (a fleet does not reconnect at once)")
	window := flag.Int("window", 256<<20, "initial HTTP/2 stream and connection windows, as Envoy's "+
		"http2_protocol_options (default 256 MiB); 0: grpc-go's dynamic window with BDP pings, which Envoy never sends")
	flag.Parse()

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	subs := subscriptions(*clusters)
	nconn := (*count + *perConn - 1) / *perConn
	conns := make([]*grpc.ClientConn, nconn)
	for k := range conns {
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256 << 20))}
		if *window > 0 { // a fixed window turns grpc-go's BDP estimator (a PING per burst read) off
			opts = append(opts, grpc.WithInitialWindowSize(int32(*window)),
				grpc.WithInitialConnWindowSize(int32(*window)))
		}
		conn, err := grpc.NewClient(*target, opts...)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			os.Exit(2)
		}
		conns[k] = conn
	}
	var c counters
	var wg sync.WaitGroup
	for n := 0; n < *count; n++ {
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			for attempt := 0; attempt <= *retries && ctx.Err() == nil; attempt++ {
				var err error
				if *delta {
					err = runDelta(ctx, conns[n%nconn], *first+n, subs, &c)
				} else {
					err = runSotw(ctx, conns[n%nconn], *first+n, subs, &c)
				}
				if ctx.Err() != nil {
					return
				}
				if c.errors.Add(1) <= 5 {
					fmt.Fprintf(os.Stderr, "stream %d attempt %d: %v\n", *first+n, attempt, err)
				}
				// back off like Envoy: 0.5 s doubling up to 8 s, with jitter
				backoff := time.Duration(500<<min(attempt, 4)) * time.Millisecond
				select {
				case <-ctx.Done():
				case <-time.After(backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)))):
				}
			}
		}(n)
		if n%50 == 49 {
			time.Sleep(time.Duration(50 * int(time.Second) / *rate)) // paced: no burst of thousands at once
		}
	}
	<-ctx.Done()
	wg.Wait()
	out := map[string]any{"errors": c.errors.Load()}
	for k, t := range []string{"CDS", "EDS", "LDS", "RDS"} {
		out[t] = map[string]int64{"responses": c.responses[k].Load(), "resources": c.resources[k].Load(),
			"removed": c.removed[k].Load()}
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
}
