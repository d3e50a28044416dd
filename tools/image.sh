#!/usr/bin/env bash
# Build and smoke-test the deskbot image without a Docker engine (buildah, podman,
# debootstrap from Debian; see the README's Docker section).
#
#   tools/image.sh build   # `make image`: tools if missing, stand-in base if missing, build
#   tools/image.sh test    # `make image-test`: smoke test (builds first if the image is missing)
#
# Base images cannot be pulled on these machines: when the Dockerfile's base is not in
# local storage, a stand-in is bootstrapped from Debian's mirror (Debian's Python 3.11 in
# bookworm) and imported under the base's name. It proves the Dockerfile's steps, user,
# paths and entry point, not the exact upstream base. Its rootfs stays in .image/.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/deskbot}
WORK=.image
ROOTFS=$WORK/rootfs
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
RUN_ARGS=(--isolation chroot --network host)

say() { printf 'image: %s\n' "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }

need_tools() {
  local missing="" t
  for t in buildah podman debootstrap; do command -v "$t" >/dev/null || missing="$missing $t"; done
  [ -z "$missing" ] && return
  say "installing$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
}

# The external images the Dockerfile's FROM lines name (not earlier stages), fully qualified
# the way podman stores them: python:3.12-slim-bookworm -> docker.io/library/python:3.12-...
bases() {
  awk 'toupper($1) == "FROM" {
         img = ""; stage = ""
         for (i = 2; i <= NF; i++) {
           if ($i ~ /^--/) continue
           if (img == "") img = $i; else if (toupper($i) == "AS") stage = $(i + 1)
         }
         if (!(img in stages)) print img
         if (stage != "") stages[stage] = 1
       }' Dockerfile |
    awk -F/ '{ if (NF == 1) $0 = "docker.io/library/" $0
               else if ($1 !~ /[.:]/ && $1 != "localhost") $0 = "docker.io/" $0
               print }' OFS=/ | sort -u
}

unmount_rootfs() {  # whatever a failed debootstrap or chroot left mounted in it
  local abs m
  abs=$(realpath -m "$ROOTFS")
  awk -v p="$abs/" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r |
    while read -r m; do $SUDO umount -l "$m"; done
}

# Debian bookworm minbase + python3, venv and CA roots; about a minute, done once.
bootstrap_rootfs() {
  local mirror
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  mkdir -p "$WORK"
  printf '*\n' >"$WORK/.gitignore"  # never committed
  unmount_rootfs
  $SUDO rm -rf --one-file-system "$ROOTFS" "$WORK/rootfs.ok"
  say "debootstrap bookworm from $mirror into $ROOTFS"
  $SUDO debootstrap --variant=minbase bookworm "$ROOTFS" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap (log: $WORK/debootstrap.log)"; }
  $SUDO cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
  say "installing python3 in the stand-in"
  $SUDO chroot "$ROOTFS" sh -c 'export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq &&
    apt-get install -y -qq --no-install-recommends python3 python3-venv python-is-python3 ca-certificates &&
    apt-get clean && rm -rf /var/lib/apt/lists/*' >"$WORK/chroot.log" 2>&1 ||
    { tail -20 "$WORK/chroot.log" >&2; die "apt-get in the stand-in (log: $WORK/chroot.log)"; }
  # pip inside the build trusts the same roots as pip on the host
  $SUDO cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
  $SUDO rm -f "$ROOTFS/etc/resolv.conf"  # buildah provides one at run time
  unmount_rootfs
  touch "$WORK/rootfs.ok"
}

ensure_base() {
  local base=$1
  if podman image exists "$base"; then
    say "base $base is in local storage"
    return
  fi
  [ "$(uname -m)" = x86_64 ] || die "the Dockerfile asks for linux/amd64; this is $(uname -m)"
  [ -f "$WORK/rootfs.ok" ] || bootstrap_rootfs
  say "importing the stand-in as $base"
  $SUDO tar -C "$ROOTFS" -c . | podman import -q \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - "$base" >/dev/null
}

build() {
  local base start=$SECONDS
  need_tools
  for base in $(bases); do ensure_base "$base"; done
  say "building $IMAGE"
  local t0=$SECONDS old
  old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
  # --format docker keeps HEALTHCHECK (OCI drops it); --pull=never: nothing can be pulled here
  buildah bud "${RUN_ARGS[@]}" --pull=never --format docker -t "$IMAGE" . >"$WORK/build.log" 2>&1 ||
    { tail -30 "$WORK/build.log" >&2; die "buildah bud (log: $WORK/build.log)"; }
  # the previous build, now untagged, would pile up (277 MB each)
  if [ -n "$old" ] && [ "$old" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    podman rmi "$old" >/dev/null 2>&1 || true
  fi
  say "built $IMAGE in $((SECONDS - t0)) s (all of make image: $((SECONDS - start)) s)"
  podman images --filter "reference=$IMAGE" --format 'image: {{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' >&2
}

# --- smoke test ---------------------------------------------------------------------------

CTR=""
cleanup() { [ -z "$CTR" ] || buildah rm "$CTR" >/dev/null 2>&1 || true; }
inside() { buildah run "${RUN_ARGS[@]}" "$CTR" -- "$@"; }
pass() { say "ok: $*"; }

expect_line() {  # expect_line WHAT OUTPUT REGEX
  grep -Eq -- "$3" <<<"$2" || { printf '%s\n' "$2" >&2; die "$1: no line matching /$3/"; }
}

smoke() {
  need_tools
  mkdir -p "$WORK"
  printf '*\n' >"$WORK/.gitignore"
  podman image exists "$IMAGE" || build
  trap cleanup EXIT
  CTR=$(buildah from --pull=never "$IMAGE")
  local user out rc version
  user=$(buildah inspect --type image --format '{{.Docker.Config.User}}' "$IMAGE")
  [ -n "$user" ] && [ "$user" != root ] && [ "$user" != 0 ] || die "image USER is '${user:-unset}'"

  # 1. the non-root user
  out=$(inside sh -c 'echo "$(id -un) $(id -u)"')
  [ "${out% *}" = "$user" ] && [ "${out#* }" != 0 ] || die "runs as '$out', want $user (non-root)"
  pass "runs as $out (USER $user)"

  # 2. --version matches pyproject.toml
  version=$(awk -F'"' '/^version *=/{print $2; exit}' pyproject.toml)
  out=$(inside deskbot --version)
  [ "$out" = "deskbot $version" ] || die "deskbot --version said '$out', want 'deskbot $version'"
  pass "$out"

  # 3. the demo: a 200, a 404 and a 408 from the simulated phones
  out=$(inside sh -c 'printf "486 hello\n489 hi there\n488 ping\n" | deskbot demo' 2>&1) ||
    { printf '%s\n' "$out" >&2; die "deskbot demo exited $?"; }
  expect_line demo "$out" '^📟 486 Reception shows: Alice: hello$'
  expect_line demo "$out" '486 \(Reception\): 200 OK'
  expect_line demo "$out" '489 \(Old desk\): 404 Not Found'
  expect_line demo "$out" '488 \(Lab\): 408 Request Timeout'
  pass "demo: 486 200 OK, 489 404 Not Found, 488 408 Request Timeout"

  # 4. check-config on the example shipped in the image: refused without the secrets,
  #    accepted with dummy values for every *_env it names
  local example=/config/config.example.toml envs
  rc=0; out=$(inside deskbot check-config -c "$example" 2>&1) || rc=$?
  [ "$rc" = 2 ] || { printf '%s\n' "$out" >&2; die "check-config without secrets exited $rc, want 2"; }
  expect_line "check-config without secrets" "$out" 'is not set'
  envs=$(inside sed -n 's/^[a-z_]*_env *= *"\([A-Z0-9_]*\)".*/\1=dummy/p' "$example" | tr '\n' ' ')
  rc=0; out=$(inside env $envs deskbot check-config -c "$example" 2>&1) || rc=$?
  [ "$rc" = 0 ] || { printf '%s\n' "$out" >&2; die "check-config exited $rc (with $envs)"; }
  expect_line check-config "$out" ': ok: '
  pass "check-config without secrets exits 2; with $envs: $out"

  # 5. deskbot run answers the image's own HEALTHCHECK command (read back from the built
  #    image, so this also proves the HEALTHCHECK survived the build)
  local -a hc
  mapfile -t hc < <(buildah inspect --type image \
    --format '{{range .Docker.Config.Healthcheck.Test}}{{println .}}{{end}}' "$IMAGE")
  case "${hc[0]:-}" in
    CMD) hc=("${hc[@]:1}") ;;
    CMD-SHELL) hc=(sh -c "${hc[1]}") ;;
    *) die "the image has no HEALTHCHECK command (built with --format docker?)" ;;
  esac
  # --network host: the HEALTHCHECK's port 9120 is the host's too
  if (exec 3<>/dev/tcp/127.0.0.1/9120) 2>/dev/null; then
    die "something on this machine already listens on 127.0.0.1:9120"
  fi
  rc=0
  out=$(inside sh -c '
    cat >/tmp/smoke.toml <<EOF
[sip]
listen = "127.0.0.1:0"
from_uri = "sip:deskbot@127.0.0.1"
[audit]
path = "/data/smoke.sqlite3"
[health]
listen = "127.0.0.1:9120"
[phones.486]
uri = "sip:486@127.0.0.1:5999"
EOF
    deskbot run -c /tmp/smoke.toml 2>/tmp/run.log &
    pid=$!
    # wait until the health port accepts connections, or deskbot exits, or 30 s pass
    python -c "
import os, socket, sys, time
end = time.monotonic() + 30
while time.monotonic() < end:
    try:
        os.kill($pid, 0)
    except ProcessLookupError:
        sys.exit(\"deskbot run exited before serving /healthz\")
    try:
        socket.create_connection((\"127.0.0.1\", 9120), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(\"no /healthz within 30 s\")
" || { cat /tmp/run.log; exit 10; }
    # as Docker does within --start-period: ask again until ready (the sources start after
    # the health port opens), at most 100 times
    for _ in $(seq 100); do "$@" 2>/dev/null && break; done
    "$@"; hc=$?
    echo "healthcheck exit $hc"
    kill -TERM $pid; wait $pid; echo "run exit $?"
    cat /tmp/run.log
    ls -l /data/smoke.sqlite3
    [ "$hc" = 0 ]' sh "${hc[@]}" 2>&1) || rc=$?
  [ "$rc" = 0 ] || { printf '%s\n' "$out" >&2; die "deskbot run + HEALTHCHECK (exit $rc)"; }
  expect_line run "$out" '^healthcheck exit 0$'
  expect_line run "$out" '^run exit 0$'
  expect_line run "$out" 'no \[slack\], \[matrix\] or \[api\] table'
  expect_line run "$out" 'INFO deskbot: stopping'
  expect_line run "$out" " $user .*/data/smoke.sqlite3$"
  pass "run: HEALTHCHECK exit 0, SIGTERM -> exit 0, audit written to /data as $user"
  say "image smoke test passed: $IMAGE $(podman images --filter "reference=$IMAGE" --format '{{.Size}}')"
}

case "${1:-}" in
  build) build ;;
  test) smoke ;;
  *) echo "usage: $0 build|test" >&2; exit 2 ;;
esac
