#!/usr/bin/env bash
# Builds every Kubernetes node component from its pinned Go module, reproducibly, into one directory:
#
#   ${CONSTELLATION_K8S_COMPONENTS:-${CONSTELLATION_CACHE:-~/.cache/constellation-rs}/kubernetes/components-<key>}/
#     kubeadm kubelet kube-apiserver kube-controller-manager kube-scheduler   (image/kubernetes/go.mod, via
#                                                                              scripts/build-kubernetes.sh)
#     etcd                                  (image/kubernetes/etcd: the release kubeadm's DefaultEtcdVersion names)
#     containerd containerd-shim-runc-v2 ctr (image/kubernetes/containerd)
#     runc                                  (image/kubernetes/runc: cgo, static-pie, seccomp via Debian libseccomp-dev)
#     bridge host-local loopback            (image/kubernetes/cni)
#     pause                                 (image/pause, Rust, static)
#     manifest.json                         (versions and sha256 of every binary)
#
# <key> is a hash of every input that decides the bytes (wrapper go.mod/go.sum, these scripts, the Go
# toolchain, the C compiler and libseccomp for runc). A stamp in the directory makes a second run with
# the same inputs a no-op that only re-checks the hashes. Prints the directory on stdout.
#
# All Go builds: -trimpath, -buildvcs=false, an empty build ID (-buildid=), -s -w, GOTOOLCHAIN=local,
# -mod=readonly (go.mod/go.sum are the pin; a build never edits them), one build at a time. Versions are
# stamped as each upstream release stamps them; release commits are not known from the module proxy,
# so commit fields are left empty (as a `go build` from the module gives).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mods="$root/image/kubernetes"
die() { echo "build-kubernetes-components: $*" >&2; exit 1; }
log() { echo "build-kubernetes-components: $*" >&2; }
command -v go >/dev/null || die "go not found: install Go (see image/kubernetes/go.mod for the version)"
command -v cc >/dev/null || die "cc not found: runc needs a C compiler (scripts/install-deps.sh)"
pkg-config --exists libseccomp || die "libseccomp not found by pkg-config: install libseccomp-dev (scripts/install-deps.sh)"

export GOTOOLCHAIN=local GOFLAGS=-mod=readonly
cache="${CONSTELLATION_CACHE:-$HOME/.cache/constellation-rs}"

modver() { (cd "$mods/$1" && go list -m -f '{{.Version}}' "$2"); }
k8s=$(cd "$mods" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
etcd=$(modver etcd go.etcd.io/etcd/server/v3)
containerd=$(modver containerd github.com/containerd/containerd/v2)
runc=$(modver runc github.com/opencontainers/runc)
cni=$(modver cni github.com/containernetworking/plugins)

# etcd must be the release this kubeadm deploys by default (its static pod image tag is <version>-0).
want_etcd=$(grep -oP '^\s*DefaultEtcdVersion\s*=\s*"\K[0-9.]+' \
  "$(cd "$mods" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/cmd/kubeadm/app/constants/constants.go") \
  || die "DefaultEtcdVersion not found in kubeadm $k8s's constants.go"
[ "$etcd" = "v$want_etcd" ] || die "image/kubernetes/etcd pins etcd $etcd, kubeadm $k8s expects v$want_etcd"

key=$( {
  cat "$0" "$root/scripts/build-kubernetes.sh"
  for d in "" etcd containerd runc cni; do cat "$mods/$d/go.mod" "$mods/$d/go.sum"; done
  go version
  cc --version | head -1
  pkg-config --modversion libseccomp
  cat "$root/Cargo.lock" "$root/image/pause/Cargo.toml" "$root/image/pause/src/main.rs"
  rustc --version
} | sha256sum | cut -c1-16)
dir="${CONSTELLATION_K8S_COMPONENTS:-$cache/kubernetes/components-$key}"
mkdir -p "$dir"
exec 8>"$dir/.components.lock"
flock 8  # build-kubernetes.sh locks .lock in the same directory

bins=(kubeadm kubelet kube-apiserver kube-controller-manager kube-scheduler etcd containerd
  containerd-shim-runc-v2 ctr runc bridge host-local loopback pause)

if [ -e "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$key" ]; then
  (cd "$dir" && jq -r '.binaries | to_entries[] | "\(.value.sha256)  \(.key)"' manifest.json | sha256sum --quiet -c -) \
    || die "$dir: binaries differ from manifest.json; remove the directory to rebuild"
  log "up to date: $dir"
  echo "$dir"
  exit 0
fi
rm -f "$dir/.stamp"


# gobuild MODULE-DIR OUT PACKAGE [go build args...]
gobuild() {
  local m=$1 out=$2 pkg=$3; shift 3
  local t0=$SECONDS
  log "building $out from $pkg"
  (cd "$mods/$m" && go build -trimpath -buildvcs=false "$@" -o "$dir/$out.tmp" "$pkg")
  mv "$dir/$out.tmp" "$dir/$out"
  log "$out built in $((SECONDS - t0)) s"
}
ld="-s -w -buildid="

CGO_ENABLED=0 gobuild etcd etcd go.etcd.io/etcd/server/v3 -ldflags "$ld"

# containerd's Makefile stamps Version, Revision and Package; btrfs support is cgo-only and drops out.
cv=github.com/containerd/containerd/v2/version
cx="$ld -X $cv.Version=$containerd -X $cv.Package=github.com/containerd/containerd/v2"
for b in containerd containerd-shim-runc-v2 ctr; do
  CGO_ENABLED=0 gobuild containerd "$b" "github.com/containerd/containerd/v2/cmd/$b" -ldflags "$cx"
done

# runc as its Makefile's static target builds it, without the libpathrs tag (that C library is not
# packaged for Debian 12): seccomp needs cgo and libseccomp, linked statically (static-pie).
# The version comes from the module's embedded VERSION file.
CGO_ENABLED=1 gobuild runc runc github.com/opencontainers/runc -buildmode=pie \
  -tags "seccomp urfave_cli_no_docs netgo osusergo" \
  -ldflags "$ld -linkmode external -extldflags -static-pie"

bv=github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion
for p in main/bridge ipam/host-local main/loopback; do
  CGO_ENABLED=0 gobuild cni "${p#*/}" "github.com/containernetworking/plugins/plugins/$p" -ldflags "$ld -X $bv=$cni"
done

# pause (image/pause), static glibc, in its own target directory because RUSTFLAGS differ from the
# workspace's; paths in the binary are remapped so it does not depend on where the tree lives.
pt="$cache/kubernetes/pause-target"
t0=$SECONDS
RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols --remap-path-prefix=$root=/src \
--remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo --remap-path-prefix=$(rustc --print sysroot)=/rustc" \
  cargo build -q --locked --release -p constellation-pause --target x86_64-unknown-linux-gnu \
  --target-dir "$pt" --manifest-path "$root/Cargo.toml"
cp "$pt/x86_64-unknown-linux-gnu/release/pause" "$dir/pause.tmp" && mv "$dir/pause.tmp" "$dir/pause"
log "pause built in $((SECONDS - t0)) s"

# Kubernetes itself, last: by far the longest build (it checks each binary's stamped version).
KUBERNETES_OUT="$dir" bash "$root/scripts/build-kubernetes.sh" all >/dev/null

# Every binary reports the pinned version, and runc supports seccomp.
check() { [[ $2 == *"$3"* ]] || die "$1 reports '$2', want it to contain '$3'"; }
check kubeadm "$("$dir/kubeadm" version -o short)" "$k8s"
check etcd "$("$dir/etcd" --version)" "etcd Version: ${etcd#v}"
check containerd "$("$dir/containerd" --version)" "$containerd"
check containerd-shim-runc-v2 "$("$dir/containerd-shim-runc-v2" -v)" "$containerd"
check ctr "$("$dir/ctr" --version)" "$containerd"
rv=$("$dir/runc" --version)
check runc "$rv" "runc version ${runc#v}"
check runc "$rv" "libseccomp: "
for p in bridge host-local loopback; do
  check "$p" "$(CNI_COMMAND=VERSION "$dir/$p" </dev/null)" '"supportedVersions"'
  check "$p" "$("$dir/$p" --version 2>&1 || true)" "$cni"
done
check pause "$("$dir/pause" -v)" "pause"
"$dir/pause" 2>/dev/null & pid=$!
sleep 0.5
kill -TERM "$pid"
wait "$pid" || die "pause did not exit 0 on SIGTERM"
file "$dir"/* 2>/dev/null | grep -v 'statically linked\|static-pie linked\|\.lock\|manifest.json' | grep ELF \
  && die "a binary above is dynamically linked"

{
  printf '{\n  "kubernetes": "%s", "etcd": "%s", "containerd": "%s", "runc": "%s", "cni_plugins": "%s",\n' \
    "$k8s" "$etcd" "$containerd" "$runc" "$cni"
  printf '  "go": "%s", "libseccomp": "%s", "inputs": "%s",\n  "binaries": {\n' \
    "$(go env GOVERSION)" "$(pkg-config --modversion libseccomp)" "$key"
  sep=""
  for b in "${bins[@]}"; do
    printf '%s    "%s": {"sha256": "%s", "size": %s}' "$sep" "$b" "$(sha256sum "$dir/$b" | cut -d' ' -f1)" "$(stat -c %s "$dir/$b")"
    sep=$',\n'
  done
  printf '\n  }\n}\n'
} >"$dir/manifest.json.tmp"
jq . "$dir/manifest.json.tmp" >/dev/null || die "manifest.json is not valid JSON"
mv "$dir/manifest.json.tmp" "$dir/manifest.json"
echo "$key" >"$dir/.stamp"
log "done: $dir"
echo "$dir"
