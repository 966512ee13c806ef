#!/usr/bin/env bash
# Builds the pinned Kubernetes components from their Go modules (image/kubernetes/go.mod) into
# ${KUBERNETES_OUT:-${CONSTELLATION_CACHE:-~/.cache/constellation-rs}/kubernetes/<version>}/<name>, each only
# when it is missing, and prints the paths on stdout (one a line, in argument order).
#
#   scripts/build-kubernetes.sh [COMPONENT...]     (default: kubeadm)
#   COMPONENT: kubeadm kubelet kube-apiserver kube-controller-manager kube-scheduler, or `all`
#
# Build flags follow upstream's release build (hack/lib/golang.sh, hack/lib/version.sh): static
# (CGO_ENABLED=0), `-trimpath`, `-s -w`, an empty build ID, tags `selinux,notest,grpcnotrace`, and the version stamped
# with -X into k8s.io/component-base/version and k8s.io/client-go/pkg/version. Unstamped, the
# version reads `v0.0.0-master+$Format:%H$`, which kubeadm cannot parse. buildDate is the release's
# time as the module proxy reports it, so the bytes do not depend on when or where the build runs.
# The release commit is not known from the module proxy: gitCommit/gitTreeState are stamped only
# when KUBE_GIT_COMMIT is set (as upstream does). A cold build of one component takes many minutes
# on 2 cores; Go's module and build caches (GOMODCACHE, GOCACHE) make later ones much faster.
set -euo pipefail
cd "$(dirname "$0")/../image/kubernetes"

all=(kubeadm kubelet kube-apiserver kube-controller-manager kube-scheduler)
die() { echo "build-kubernetes: $*" >&2; exit 1; }
command -v go >/dev/null || die "go not found: install Go (see image/kubernetes/go.mod for the version)"

# A machine-wide GOFLAGS must not change the build; go.mod/go.sum are the pin, a build never edits them.
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0

if [ $# -eq 0 ]; then set -- kubeadm; fi
if [ "$*" = all ]; then set -- "${all[@]}"; fi
for name in "$@"; do
  [[ " ${all[*]} " == *" $name "* ]] || die "unknown component '$name' (one of: ${all[*]}, or all)"
done

# The pinned release, and a check that every k8s.io staging module is at the matching v0.N.P:
# mixing releases compiles in surprising ways or not at all.
read -r version time < <(go list -m -f '{{.Version}} {{.Time.UTC.Unix}}' k8s.io/kubernetes)
[[ $version =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "unexpected k8s.io/kubernetes version '$version'"
minor=${BASH_REMATCH[1]}
staging="v0.$minor.${BASH_REMATCH[2]}"
mismatch=$(go list -m -f '{{with .Replace}}{{.Path}} {{.Version}}{{end}}' all | awk -v want="$staging" '$1 ~ /^k8s\.io\// && $2 != want')
[ -z "$mismatch" ] || die "staging modules not at $staging: $mismatch"

date=$(date -u -d "@$time" +%Y-%m-%dT%H:%M:%SZ)
X=""
for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  X+=" -X $p.buildDate=$date -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  if [ -n "${KUBE_GIT_COMMIT:-}" ]; then
    X+=" -X $p.gitCommit=$KUBE_GIT_COMMIT -X $p.gitTreeState=clean"
  fi
done

dir="${KUBERNETES_OUT:-${CONSTELLATION_CACHE:-$HOME/.cache/constellation-rs}/kubernetes/$version}"
mkdir -p "$dir"
# One build at a time per cache: two concurrent links of these binaries need several GiB each.
exec 9>"$dir/.lock"
flock 9

reported_version() {
  case $1 in
    kubeadm) "$2" version -o short ;;
    *) "$2" --version | sed -n 's/^Kubernetes //p' ;;
  esac
}

for name in "$@"; do
  out="$dir/$name"
  if [ ! -x "$out" ]; then
    echo "build-kubernetes: building $name $version into $out" >&2
    tmp="$out.tmp.$$"
    trap 'rm -f "$tmp"' EXIT
    t0=$SECONDS
    go build -trimpath -buildvcs=false -tags selinux,notest,grpcnotrace \
      -ldflags "-s -w -buildid=$X" -o "$tmp" "k8s.io/kubernetes/cmd/$name"
    got=$(reported_version "$name" "$tmp")
    [ "$got" = "$version" ] || die "$name reports version '$got', want $version"
    # A half-written or wrongly stamped binary never sits at the cached path.
    mv "$tmp" "$out"
    trap - EXIT
    echo "build-kubernetes: $name built in $((SECONDS - t0)) s, $(stat -c %s "$out") bytes, sha256 $(sha256sum "$out" | cut -d' ' -f1)" >&2
  fi
  # Refuse a cached binary that is not the pinned release.
  got=$(reported_version "$name" "$out")
  [ "$got" = "$version" ] || die "$out reports version '$got', want $version"
  echo "$out"
done
