// Command etcd is etcd's server, built from go.etcd.io/etcd/server/v3 at the version Kubernetes pins, for the
// throwaway test cluster (Debian's etcd 3.4 is older than current Kubernetes expects).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
