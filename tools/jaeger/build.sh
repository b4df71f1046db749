#!/usr/bin/env bash
# Builds Jaeger (github.com/jaegertracing/jaeger, the all-in-one `jaeger` binary: OTLP/Zipkin receivers, storage
# in memory, query API) once from the Go module proxy into a cache keyed by its version, the way
# tools/kube/build.sh caches the Kubernetes binaries. Prints the binary's path on success.
#
#   tools/jaeger/build.sh            build if missing, print the binary's path
#   tools/jaeger/build.sh --check    exit 0 if built (prints the path), 1 if not
#
# Environment: MIZZEN_JAEGER_CACHE (default ~/.cache/mizzen/jaeger), GOMODCACHE/GOCACHE as Go's.
# The build runs at the lowest CPU priority; a cold build is measured in tools/jaeger/README.md.
set -euo pipefail
version=v1.75.0
dir="${MIZZEN_JAEGER_CACHE:-$HOME/.cache/mizzen/jaeger}/$version/bin"
bin="$dir/jaeger"
if [[ -x $bin ]]; then echo "$bin"; exit 0; fi
[[ ${1:-} == --check ]] && exit 1
command -v go >/dev/null || { echo "tools/jaeger/build.sh: Go is not installed (needs Go >= 1.24)" >&2; exit 2; }
mkdir -p "$dir"
echo "building jaeger $version into $dir; the first build takes a while" >&2
start=$(date +%s)
# build into a temporary dir, then move: the cache never holds a half-written binary
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# `go install pkg@version` refuses a module whose go.mod has replace directives (jaeger pins sarama so), so
# the module is downloaded and built as the main module, where its go.mod and go.sum apply unchanged
src=$(go mod download -json "github.com/jaegertracing/jaeger@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[[ -n $src && -f $src/go.mod ]] || { echo "tools/jaeger/build.sh: could not download jaeger $version" >&2; exit 2; }
(cd "$src" && GOFLAGS=-mod=readonly nice -n 19 go build -trimpath -ldflags "-s -w" -o "$tmp/jaeger" ./cmd/jaeger)
mv -f "$tmp/jaeger" "$bin"
echo "built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
