#!/usr/bin/env bash
# Builds the real Kubernetes control plane the tests' throwaway cluster runs, once, into a cache keyed by the
# release: kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and kubectl from k8s.io/kubernetes
# (every k8s.io staging module pinned to the matching v0.X.Y in go.mod beside this file), and etcd from
# go.etcd.io/etcd/server/v3 at the version that release pins. Prints the bin directory on success.
#
#   tools/kube/build.sh            build what is missing, print the bin dir
#   tools/kube/build.sh --check    exit 0 if everything is built (prints the bin dir), 1 if not
#
# Environment: MIZZEN_KUBE_CACHE (default ~/.cache/mizzen/kube), GOMODCACHE/GOCACHE as Go's.
# The build runs at the lowest CPU priority; a cold build (module download + compile) is measured in
# tools/kube/README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
release=$(grep -oE 'k8s.io/kubernetes v[0-9.]+' "$here/go.mod" | head -n1 | cut -d' ' -f2)
[[ -n $release ]] || { echo "tools/kube/build.sh: cannot read the Kubernetes release from go.mod" >&2; exit 2; }
bin="${MIZZEN_KUBE_CACHE:-$HOME/.cache/mizzen/kube}/$release/bin"
cmds=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl etcd)

missing=()
for c in "${cmds[@]}"; do [[ -x $bin/$c ]] || missing+=("$c"); done
if [[ ${1:-} == --check ]]; then
  ((${#missing[@]} == 0)) && { echo "$bin"; exit 0; }
  exit 1
fi
((${#missing[@]} == 0)) && { echo "$bin"; exit 0; }

command -v go >/dev/null || { echo "tools/kube/build.sh: Go is not installed (needs Go >= 1.26)" >&2; exit 2; }
mkdir -p "$bin"
pkgs=()
for c in "${missing[@]}"; do
  case $c in
    etcd) pkgs+=(./cmd/etcd) ;;
    *) pkgs+=("k8s.io/kubernetes/cmd/$c") ;;
  esac
done
echo "building ${missing[*]} (Kubernetes $release) into $bin; the first build takes a while" >&2
start=$(date +%s)
# build into a temporary dir, then move: a cache never holds a half-written binary
tmp=$(mktemp -d "$bin/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(cd "$here" && GOFLAGS=-mod=mod nice -n 19 go build -trimpath -ldflags "-s -w" -o "$tmp/" "${pkgs[@]}")
for c in "${missing[@]}"; do mv -f "$tmp/$c" "$bin/$c"; done
echo "built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
