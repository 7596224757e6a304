# Shared set-up for scripts/demo, scripts/test and scripts/bench. Source it; do not run it.
# Everything it starts lives in one temp directory ($TP_RUN) and is stopped by pid on exit.
set -euo pipefail

TP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Debian's docker client (docker.io, or docker-cli on Debian 13) matches its daemon; another client earlier on PATH may not.
if [ -x /usr/bin/docker ]; then TP_DOCKER=/usr/bin/docker; else TP_DOCKER=docker; fi
export TP_ROOT TP_DOCKER

tp_log() { printf '\033[1m[tarport]\033[0m %s\n' "$*" >&2; }

# Debian packages the project needs at run time and in tests. Installed only when missing.
TP_APT_PACKAGES=(docker.io busybox-static skopeo zstd gnupg ca-certificates vsftpd openssh-server openssh-client openssl curl nginx libnginx-mod-http-js
  libsodium23 libcap2 libpam0g containerd podman
  prometheus systemd groff-base man-db bsdutils chromium  # promtool checks metrics; systemd-analyze the units; groff/man the man page; script(1) a TTY; chromium renders index.html
  fusefat exfat-fuse dosfstools exfatprogs  # real sticks for the air-gap tests (test/sticks.ts): FAT32 through fusefat, exFAT on a loop device
  python3 make g++  # npm ci builds zstd-napi with node-gyp where no prebuilt binary downloads
  xz-utils bzip2 lz4)  # archives of compressions tarport names and refuses (test/unit/archive/tar.test.ts)
# qemu-aarch64 runs the arm64 single executable (test/integration/sea.test.ts). Debian 12 has it static
# in qemu-user-static; Debian 13's qemu-user is the static build (its qemu-user-static is a transitional
# package that also pulls binfmt registration, which nothing here needs).
if [ "$(. /etc/os-release 2>/dev/null; echo "${VERSION_ID%%.*}")" = 12 ]; then TP_APT_PACKAGES+=(qemu-user-static); else TP_APT_PACKAGES+=(qemu-user); fi
# Debian 13 ships the docker client apart from the daemon (docker-cli, only a Recommends of docker.io,
# which --no-install-recommends leaves out); in Debian 12 docker.io holds both and there is no docker-cli.
# (Decided by the release, not apt-cache: a fresh machine has no package lists before apt-get update;
# Debian testing and unstable name no VERSION_ID, and have docker-cli too.)
if (. /etc/os-release 2>/dev/null; [ "${ID:-}" = debian ] && { [ -z "${VERSION_ID:-}" ] || [ "${VERSION_ID%%.*}" -ge 13 ]; }); then TP_APT_PACKAGES+=(docker-cli); fi
# The cross compiler for zstd-napi's binary of the other architecture (scripts/build-native, run by the
# build: the npm package and the arm64 executable carry it; built once per zstd-napi version, cached).
case "$(dpkg --print-architecture 2>/dev/null)" in
  amd64) TP_APT_PACKAGES+=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu) ;;
  arm64) TP_APT_PACKAGES+=(gcc-x86-64-linux-gnu g++-x86-64-linux-gnu) ;;
esac
# arm64 libraries the arm64 executable (Node's own glibc build) is linked against, run under qemu.
TP_ARM64_PACKAGES=(libc6:arm64 libstdc++6:arm64)

tp_install() {
  local missing=()
  for p in "${TP_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    tp_log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # the packages' own services (system dockerd, vsftpd on :21, sshd on :22) must not start:
    # we run daemons of our own, on loopback and high ports
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; made_policy=1; fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ $made_policy = 1 ]; then rm -f "$policy"; fi
  fi
  tp_install_arm64
  # docker.io enables the system daemon's socket unit; we run daemons of our own and never need it.
  cd "$TP_ROOT"
  local stamp=node_modules/.tarport-lock-hash
  local want; want=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    tp_log "npm ci"
    # zstd-napi's binary, compiled by npm ci where no prebuilt one comes, asks for glibc's old
    # pthread versions as scripts/build-native's does, which then takes it as it is
    CFLAGS="-include $TP_ROOT/scripts/lib/glibc-compat.h" CXXFLAGS="-include $TP_ROOT/scripts/lib/glibc-compat.h" \
      npm ci --no-fund --no-audit --loglevel=error >/dev/null
    echo "$want" > "$stamp"
  fi
  # zstd-napi's binaries (minutes of compiling the first time, then cached) compile in the background
  # while the TypeScript builds; scripts/test lets them go on through its set-up (TP_NATIVE_DEFER=1)
  # and waits for them before the suite (tp_native_wait)
  TP_NATIVE_LOG=$(mktemp /tmp/tarport-native.XXXXXX)
  # a session of its own: tp_native_stop ends the whole compile (node-gyp, make, the compilers)
  setsid bash scripts/build-native --cache-only > "$TP_NATIVE_LOG" 2>&1 &
  TP_NATIVE_PID=$!
  # until tp_rundir's trap (tp_cleanup) takes over: a set-up that fails before does not leave it running
  trap tp_native_stop EXIT
  tp_log "building"
  npm run --silent build:js
  [ "${TP_NATIVE_DEFER:-}" = 1 ] || tp_native_wait
}

# Waits for the background compile tp_install started and puts zstd-napi's binaries into the build.
tp_native_wait() {
  [ -n "${TP_NATIVE_PID:-}" ] || return 0
  local rc=0
  wait "$TP_NATIVE_PID" || rc=$?
  TP_NATIVE_PID=
  cat "$TP_NATIVE_LOG" >&2; rm -f "$TP_NATIVE_LOG"
  [ $rc = 0 ] || { tp_log "FAILED: zstd-napi's native build (log above)"; return 1; }
  (cd "$TP_ROOT" && bash scripts/build-native)
}

# A set-up that stops early leaves no compile running.
tp_native_stop() {
  [ -n "${TP_NATIVE_PID:-}" ] || return 0
  # every process of its session: timeout(1) inside puts node-gyp into a process group of its own
  pkill -s "$TP_NATIVE_PID" 2>/dev/null || true
  TP_NATIVE_PID=
  rm -f "$TP_NATIVE_LOG"
}

# Debian's arm64 architecture and the few arm64 libraries Node's arm64 binary needs, so the arm64
# single executable runs here under qemu-user (measured: ~9 MB of package lists and ~3 MB of packages,
# under 1.5 min on a busy host; once). A failure stops the set-up: the suite would fail on it anyway.
tp_install_arm64() {
  [ "$(dpkg --print-architecture)" = amd64 ] || return 0
  local missing=()
  for p in "${TP_ARM64_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  tp_log "installing arm64 libraries for the arm64 executable under qemu: ${missing[*]}"
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# pure-ftpd, the second FTP server implementation, conflicts with vsftpd as a Debian package
# (both provide ftp-server), so its binary is unpacked from Debian's package into a cache instead.
tp_pure_ftpd() {
  local dir="${XDG_CACHE_HOME:-$HOME/.cache}/tarport-test/pure-ftpd"
  if [ ! -x "$dir/usr/sbin/pure-ftpd" ]; then
    local tmp; tmp=$(mktemp -d)
    chmod 755 "$tmp"
    (cd "$tmp" && apt-get download pure-ftpd >/dev/null 2>&1) || { apt-get update -qq && (cd "$tmp" && apt-get download pure-ftpd >/dev/null 2>&1); }
    mkdir -p "$dir"
    dpkg-deb -x "$tmp"/pure-ftpd_*.deb "$dir"
    rm -rf "$tmp"
  fi
  echo "$dir/usr/sbin/pure-ftpd"
}

# tp_rundir: one temp directory for this script run; everything below is removed on exit.
tp_rundir() {
  TP_RUN=$(mktemp -d /tmp/tarport-run.XXXXXX)
  chmod 755 "$TP_RUN"
  export TP_RUN
  trap tp_cleanup EXIT
  trap 'exit 130' INT TERM
}

TP_PIDFILES=()
TP_SESSIONS=()
TP_USERS=()

# tp_report_failures NAME, after tp_rundir: a step that fails (set -e) stops the script, which then
# says which command failed before it stops what it started (tp_cleanup), so that a stopped run is
# never silent and never leaves its daemons running.
tp_report_failures() {
  TP_SCRIPT_NAME=$1
  set -E
  trap 'tp_failed="$BASH_COMMAND (line $LINENO of ${BASH_SOURCE[0]:-$0})"' ERR
  trap tp_exit_report EXIT
}
tp_exit_report() {
  local rc=$?
  # errexit still holds in an EXIT trap: the status handed on below would end the trap there,
  # before the cleanup (scripts/bench once left its daemons running so)
  set +e
  [ "$rc" = 0 ] || tp_log "$TP_SCRIPT_NAME stopped (exit $rc); the last command that failed: ${tp_failed:-none}"
  # tp_cleanup exits with the status it finds: the log line's own 0 must not stand in for the failure
  (exit "$rc")
  tp_cleanup
}

# tp_storage_driver: overlay2 (what users run) where this kernel has overlay and the run dir's file
# system can carry it, vfs otherwise; TP_STORAGE_DRIVER chooses. Printed by the scripts that measure.
tp_storage_driver() {
  if [ -n "${TP_STORAGE_DRIVER:-}" ]; then echo "$TP_STORAGE_DRIVER"; return; fi
  local t; t=$(mktemp -d "$TP_RUN/overlay-probe.XXXXXX")
  mkdir -p "$t/l" "$t/u" "$t/w" "$t/m"
  if grep -qw overlay /proc/filesystems 2>/dev/null || modprobe overlay 2>/dev/null; then
    if mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
      umount "$t/m"; rm -rf "$t"; TP_STORAGE_DRIVER=overlay2; export TP_STORAGE_DRIVER; echo overlay2; return
    fi
  fi
  rm -rf "$t"; TP_STORAGE_DRIVER=vfs; export TP_STORAGE_DRIVER; echo vfs
}

# tp_start_dockerd NAME: starts a daemon with its own roots and socket; prints nothing, sets
# TP_SOCK_<NAME>. Waits until it answers.
tp_start_dockerd() {
  local name=$1 d="$TP_RUN/docker-$1"
  mkdir -p "$d/data" "$d/exec"
  local driver; driver=$(tp_storage_driver)
  tp_log "dockerd ($name): storage driver $driver"
  dockerd --storage-driver="$driver" --iptables=false --ip6tables=false --bridge=none \
    --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/dockerd.pid" \
    -H "unix://$d/docker.sock" >"$d/dockerd.log" 2>&1 &
  echo $! > "$d/launcher.pid"
  TP_PIDFILES+=("$d/dockerd.pid" "$d/launcher.pid")
  local i
  for i in $(seq 1 120); do
    if [ -S "$d/docker.sock" ] && DOCKER_HOST="unix://$d/docker.sock" "$TP_DOCKER" version >/dev/null 2>&1; then
      printf -v "TP_SOCK_$name" '%s' "unix://$d/docker.sock"
      export "TP_SOCK_$name"
      return 0
    fi
    sleep 0.5
  done
  tp_log "dockerd ($name) did not start; its log:"; tail -n 30 "$d/dockerd.log" >&2
  return 1
}

# tp_start_containerd: a containerd of its own (root, state and socket in the run dir, a config of
# this script's own, no CRI plugin) beside the Docker daemons; the snapshotter follows the storage
# driver (overlayfs where the kernel has overlay, native otherwise). Exports TP_CONTAINERD_SOCK and
# TP_CONTAINERD_SNAPSHOTTER (ctr and tarport read CONTAINERD_SNAPSHOTTER too). Waits until it answers.
# With a SUFFIX (a test lane's, see tp_start_lanes) it lives in containerdSUFFIX and the socket is
# exported as TP_CONTAINERD_SOCKSUFFIX.
tp_start_containerd() {
  local sfx=${1:-} d="$TP_RUN/containerd${1:-}"
  mkdir -p "$d/root" "$d/state"
  local snap=native
  [ "$(tp_storage_driver)" = overlay2 ] && snap=overlayfs
  cat > "$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[debug]
  address = ""
TOML
  tp_log "containerd: snapshotter $snap"
  containerd --config "$d/config.toml" >"$d/containerd.log" 2>&1 &
  echo $! > "$d/containerd.pid"
  TP_PIDFILES+=("$d/containerd.pid")
  local i
  for i in $(seq 1 120); do
    if [ -S "$d/containerd.sock" ] && ctr -a "$d/containerd.sock" version >/dev/null 2>&1; then
      export TP_CONTAINERD_SNAPSHOTTER=$snap CONTAINERD_SNAPSHOTTER=$snap
      printf -v "TP_CONTAINERD_SOCK$sfx" '%s' "$d/containerd.sock"
      export "TP_CONTAINERD_SOCK$sfx"
      return 0
    fi
    sleep 0.5
  done
  tp_log "containerd did not start; its log:"; tail -n 30 "$d/containerd.log" >&2
  return 1
}

# tp_ctr ARGS...: ctr against our containerd.
tp_ctr() { ctr -a "$TP_CONTAINERD_SOCK" "$@"; }

# tp_start_podman: podman's API service (Docker-compatible and libpod endpoints) with its storage in
# the run dir (vfs: no overlay mounts to clean up, cgroupfs, a file event log) and a containers.conf
# of its own: this sandbox refuses to set rlimits, so default_ulimits is empty. Exports
# TP_PODMAN_SOCK (unix://...), TP_PODMAN_ARGS (the same storage flags for the podman CLI) and
# CONTAINERS_CONF. Waits until it answers. With a SUFFIX (a test lane's) it lives in podmanSUFFIX and
# exports TP_PODMAN_SOCKSUFFIX, TP_PODMAN_ARGSSUFFIX and TP_CONTAINERS_CONFSUFFIX only.
tp_start_podman() {
  local sfx=${1:-} d="$TP_RUN/podman${1:-}"
  mkdir -p "$d/root" "$d/runroot" "$d/tmp"
  printf '[containers]\ndefault_ulimits = []\n[engine]\ntmp_dir = "%s"\n' "$d/tmp" > "$d/containers.conf"
  local args="--root $d/root --runroot $d/runroot --storage-driver vfs --cgroup-manager cgroupfs --events-backend file"
  # shellcheck disable=SC2086
  CONTAINERS_CONF="$d/containers.conf" podman $args system service --time=0 "unix://$d/podman.sock" >"$d/podman.log" 2>&1 &
  echo $! > "$d/podman.pid"
  TP_PIDFILES+=("$d/podman.pid")
  local i
  for i in $(seq 1 120); do
    if [ -S "$d/podman.sock" ] && curl -sf --unix-socket "$d/podman.sock" http://d/_ping >/dev/null 2>&1; then
      if [ -z "$sfx" ]; then export CONTAINERS_CONF="$d/containers.conf"; fi
      printf -v "TP_CONTAINERS_CONF$sfx" '%s' "$d/containers.conf"
      printf -v "TP_PODMAN_ARGS$sfx" '%s' "$args"
      printf -v "TP_PODMAN_SOCK$sfx" '%s' "unix://$d/podman.sock"
      export "TP_CONTAINERS_CONF$sfx" "TP_PODMAN_ARGS$sfx" "TP_PODMAN_SOCK$sfx"
      return 0
    fi
    sleep 0.5
  done
  tp_log "podman system service did not start; its log:"; tail -n 30 "$d/podman.log" >&2
  return 1
}

# tp_podman ARGS...: the podman CLI on the service's storage.
# shellcheck disable=SC2086
tp_podman() { podman $TP_PODMAN_ARGS "$@"; }

tp_cleanup() {
  local rc=$?
  set +e +o pipefail
  tp_native_stop
  local f pid
  # background work started in sessions of its own (scripts/test's unit tests): every process of each
  for pid in "${TP_SESSIONS[@]}"; do pkill -s "$pid" 2>/dev/null; done
  for f in "${TP_PIDFILES[@]}"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  # give daemons a moment to stop their containerd and unmount, then make sure
  for i in $(seq 1 40); do
    local alive=0
    for f in "${TP_PIDFILES[@]}"; do
      [ -f "$f" ] || continue
      pid=$(cat "$f" 2>/dev/null || true)
      [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && alive=1
    done
    [ $alive = 0 ] && break
    sleep 0.25
  done
  for f in "${TP_PIDFILES[@]}"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  done
  for u in "${TP_USERS[@]}"; do userdel "$u" 2>/dev/null; done
  if [ -n "${TP_RUN:-}" ] && [ -d "$TP_RUN" ] && [ -z "${TP_KEEP_RUN:-}" ]; then
    # vfs leaves plain directories; anything still mounted under the run dir is unmounted first
    { grep -o " $TP_RUN[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done; } || true
    # the loop devices of exFAT sticks a test left behind (test/sticks.ts)
    { losetup -n -l -O NAME,BACK-FILE 2>/dev/null | awk -v run="$TP_RUN/" 'index($2, run) == 1 { print $1 }' | while read -r d; do losetup -d "$d" 2>/dev/null; done; } || true
    rm -rf "$TP_RUN"
  fi
  exit $rc
}

# Test lanes: the integration project runs its files in several worker processes at once. Each lane
# has Docker daemons (producer, consumer), a containerd and a Podman service of its own, so that
# files running side by side never see each other's images, namespaces or stores (the servers are
# shared: every test works in folders, prefixes and buckets of its own). Lane 1 uses the plain
# variables (TP_SOCK_producer, TP_CONTAINERD_SOCK, ...), lane K the same names ending in _K;
# test/integration/lane.ts claims a free lane for each test file. TP_LANES chooses how many; the
# default matches vitest's worker count (vitest.config.ts: at least 2, one per core), at most 4.
tp_lanes() {
  if [ -n "${TP_LANES:-}" ]; then echo "$TP_LANES"; return; fi
  local n; n=$(nproc 2>/dev/null || echo 2)
  [ "$n" -lt 2 ] && n=2
  [ "$n" -gt 4 ] && n=4
  echo "$n"
}

# tp_start_lanes: the daemons of lanes 2..TP_LANES (lane 1's are started by name); exports TP_LANES
# and TP_LANE_LOCKS (where test files claim lanes).
tp_start_lanes() {
  local n k; n=$(tp_lanes)
  for ((k = 2; k <= n; k++)); do
    tp_start_dockerd "producer_$k"
    tp_start_dockerd "consumer_$k"
    tp_start_containerd "_$k"
    tp_start_podman "_$k"
  done
  mkdir -p "$TP_RUN/lanes"
  export TP_LANES=$n TP_LANE_LOCKS="$TP_RUN/lanes"
  tp_log "$n test lanes"
}

# tp_lane_fixtures: the fixture images tp_build_fixtures left in lane 1's producer, into the other
# lanes' producers (tests push tarport-fixture/app:1 and :2 from the daemon).
tp_lane_fixtures() {
  local k
  for ((k = 2; k <= ${TP_LANES:-1}; k++)); do
    tp_docker producer save tarport-fixture/base:1 tarport-fixture/app:1 tarport-fixture/app:2 tarport-fixture/small:1 tarport-fixture/small:2 | tp_docker "producer_$k" load -q >/dev/null
  done
}

# tp_docker NAME ARGS...: the docker CLI against one of our daemons.
tp_docker() {
  local name=$1; shift
  local var="TP_SOCK_$name"
  DOCKER_HOST="${!var}" "$TP_DOCKER" "$@"
}

# tp_build_fixtures DAEMON OUT: builds the fixture images in daemon DAEMON from a busybox-static
# rootfs (nothing downloaded) and writes the archives the tests use into OUT:
#   app-v1.tar, app-v2.tar            docker save, legacy layout; v2 = v1's layers + one
#   app-v1.tar.gz, app-v1.tar.zst     compressed copies
#   app-export.tar, app-export.tar.gz docker export of a v1 container (a rootfs)
#   app-v1-oci.tar, app-v1-oci-gzip.tar  Docker 25+ style (OCI layout), plain and gzip layer blobs
#   app-v2-oci-gzip.tar
#   small-v1.tar, small-v2.tar        docker save of a tiny image pair of the same shape as app
tp_build_fixtures() {
  local d=$1 out=$2
  local ctx; ctx=$(mktemp -d "$TP_RUN/fixture-ctx.XXXXXX")
  mkdir -p "$out" "$ctx/rootfs/bin" "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/app"
  cp "$(command -v busybox)" "$ctx/rootfs/bin/busybox"
  local a
  for a in sh ls cat readlink stat echo test find sha256sum wc rm ln mkdir head; do ln -s busybox "$ctx/rootfs/bin/$a"; done
  echo "this file is deleted by a later layer" > "$ctx/rootfs/etc/deleted-in-upper"
  echo "base 1" > "$ctx/rootfs/etc/base-version"
  tar -C "$ctx/rootfs" -cf "$ctx/base.tar" .
  tp_docker "$d" import "$ctx/base.tar" tarport-fixture/base:1 >/dev/null

  head -c 12M /dev/urandom > "$ctx/app/random.bin"
  echo "hello from v1" > "$ctx/app/hello.txt"
  echo "hello from v2" > "$ctx/app/v2.txt"
  cat > "$ctx/app/Dockerfile.v1" <<'DOCKERFILE'
FROM tarport-fixture/base:1
COPY random.bin hello.txt /app/
RUN ln -s /app/hello.txt /app/link-to-hello && echo "one file, two names" > /app/hl-a && ln /app/hl-a /app/hl-b
RUN rm /etc/deleted-in-upper
CMD ["/bin/cat", "/app/hello.txt"]
DOCKERFILE
  { head -n 4 "$ctx/app/Dockerfile.v1"; echo 'COPY v2.txt /app/'; echo 'CMD ["/bin/cat", "/app/v2.txt"]'; } > "$ctx/app/Dockerfile.v2"
  DOCKER_BUILDKIT=0 tp_docker "$d" build -q --network none -f "$ctx/app/Dockerfile.v1" -t tarport-fixture/app:1 "$ctx/app" >/dev/null
  DOCKER_BUILDKIT=0 tp_docker "$d" build -q --network none -f "$ctx/app/Dockerfile.v2" -t tarport-fixture/app:2 "$ctx/app" >/dev/null

  # small-v1.tar, small-v2.tar: the same shape (v2 = v1's layers + one) in a few hundred KiB, for
  # the tests that race or kill hundreds of publishes, where the protocol is under test, not the bytes
  mkdir -p "$ctx/small"
  head -c 256K /dev/urandom > "$ctx/small/random.bin"
  echo "small v1" > "$ctx/small/v1.txt"; echo "small v2" > "$ctx/small/v2.txt"
  printf 'FROM scratch\nCOPY random.bin /random.bin\nCOPY v1.txt /v1.txt\n' > "$ctx/small/Dockerfile.v1"
  { cat "$ctx/small/Dockerfile.v1"; echo 'COPY v2.txt /v2.txt'; } > "$ctx/small/Dockerfile.v2"
  DOCKER_BUILDKIT=0 tp_docker "$d" build -q --network none -f "$ctx/small/Dockerfile.v1" -t tarport-fixture/small:1 "$ctx/small" >/dev/null
  DOCKER_BUILDKIT=0 tp_docker "$d" build -q --network none -f "$ctx/small/Dockerfile.v2" -t tarport-fixture/small:2 "$ctx/small" >/dev/null
  tp_docker "$d" save -o "$out/small-v1.tar" tarport-fixture/small:1
  tp_docker "$d" save -o "$out/small-v2.tar" tarport-fixture/small:2

  tp_docker "$d" save -o "$out/app-v1.tar" tarport-fixture/app:1
  tp_docker "$d" save -o "$out/app-v2.tar" tarport-fixture/app:2
  gzip -1 -c "$out/app-v1.tar" > "$out/app-v1.tar.gz"
  zstd -q -3 -c "$out/app-v1.tar" > "$out/app-v1.tar.zst"
  local cid; cid=$(tp_docker "$d" create tarport-fixture/app:1)
  tp_docker "$d" export -o "$out/app-export.tar" "$cid"
  tp_docker "$d" rm "$cid" >/dev/null
  gzip -1 -c "$out/app-export.tar" > "$out/app-export.tar.gz"
  node "$TP_ROOT/scripts/lib/oci-save.mjs" "$out/app-v1.tar" "$out/app-v1-oci.tar" none
  node "$TP_ROOT/scripts/lib/oci-save.mjs" "$out/app-v1.tar" "$out/app-v1-oci-gzip.tar" gzip
  node "$TP_ROOT/scripts/lib/oci-save.mjs" "$out/app-v2.tar" "$out/app-v2-oci-gzip.tar" gzip
  # a multi-platform image (amd64, arm64 made by editing a config, an attestation): a buildx-like OCI
  # layout, index.json listing platforms flat, a Docker 25+ save with a platform's blobs missing, and
  # what skopeo copy --all writes from the layout
  node "$TP_ROOT/scripts/lib/oci-multi.mjs" "$out/app-v1.tar" "$ctx/multi" tarport-fixture/multi:1 >/dev/null
  mv "$ctx/multi/multi-layout.tar" "$ctx/multi/multi-flat.tar" "$ctx/multi/multi-docker25.tar" "$out/"
  skopeo copy -q --all "oci:$ctx/multi/layout:1" "oci-archive:$out/multi-skopeo-all.tar:tarport-fixture/multi:1"
  rm -rf "$ctx"
}

# tp_build_bench_image DAEMON DIR MB: a >= MB megabyte image made of files already on this machine
# (shared libraries and the like, which zstd -3 shrinks about 3x), saved as DIR/v1.tar, and v2 =
# v1 + one 1 MiB layer, saved as DIR/v2.tar.
tp_build_bench_image() {
  local d=$1 W=$2 MB=$3
  tp_log "building a ${MB} MB image from files on this machine"
  local ctx="$W/ctx"; mkdir -p "$ctx/rootfs/bin"
  cp "$(command -v busybox)" "$ctx/rootfs/bin/busybox"; ln -sf busybox "$ctx/rootfs/bin/sh"
  tar -C "$ctx/rootfs" -cf "$ctx/base.tar" .
  tp_docker "$d" import "$ctx/base.tar" tarport-bench/base:1 >/dev/null
  find /usr/lib /usr/share /usr/bin /usr/local -xdev -type f -size +8k -printf '%s %p\n' 2>/dev/null | sort -k2 \
    | awk -v max=$((MB * 1024 * 1024)) '{ if (t + $1 > max) exit; t += $1; sub(/^[0-9]+ /, ""); print }' > "$ctx/files.txt" || true
  tar -cf "$ctx/big.tar" -T "$ctx/files.txt" 2>/dev/null || true
  head -c 1048576 /dev/urandom > "$ctx/update.bin"
  printf 'FROM tarport-bench/base:1\nADD big.tar /data/\n' > "$ctx/Dockerfile.v1"
  printf 'FROM tarport-bench/base:1\nADD big.tar /data/\nCOPY update.bin /data/update.bin\n' > "$ctx/Dockerfile.v2"
  DOCKER_BUILDKIT=0 tp_docker "$d" build -q --network none -f "$ctx/Dockerfile.v1" -t tarport-bench/app:1 "$ctx" >/dev/null
  DOCKER_BUILDKIT=0 tp_docker "$d" build -q --network none -f "$ctx/Dockerfile.v2" -t tarport-bench/app:2 "$ctx" >/dev/null
  tp_docker "$d" save -o "$W/v1.tar" tarport-bench/app:1
  tp_docker "$d" save -o "$W/v2.tar" tarport-bench/app:2
  rm -rf "$ctx"
}

# tp_start_servers: FTP (vsftpd), FTPS (vsftpd, explicit TLS, a CA of our own), a second FTP server
# (pure-ftpd) and SFTP (OpenSSH sshd, key auth, a host key of our own), all on loopback and random
# high ports, for a local user of our own. Exports TP_FTP_URL, TP_FTPS_URL, TP_FTP2_URL, TP_SFTP_URL
# (each pointing at a folder the user may write), TP_FTP_PASSWORD, TP_FTPS_CA, TP_SFTP_IDENTITY,
# TP_SFTP_KNOWN_HOSTS and TP_SERVER_HOME.
tp_start_servers() {
  local s="$TP_RUN/servers"
  # a user of this run's own (removed on exit), so that runs side by side do not share a password
  local user="tp-${TP_RUN##*.}"
  user=$(echo "$user" | tr 'A-Z' 'a-z')
  mkdir -p "$s/home" "$s/empty"
  useradd -M -s /bin/bash -d "$s/home" "$user"
  TP_USERS+=("$user")
  chown "$user" "$s/home"
  TP_FTP_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  # SHA-512, not the system's default yescrypt: the FTP servers check the password at every login
  # (vsftpd hashes it twice, 16 MiB each), and the suite logs in thousands of times; on 2 loaded
  # cores a yescrypt login took 0.5-1 s, a SHA-512 one 0.02-0.2 s. The password stays random.
  echo "$user:$TP_FTP_PASSWORD" | chpasswd -c SHA512
  # a CA of our own and a server certificate for 127.0.0.1 and localhost
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=tarport test CA" -keyout "$s/ca.key" -out "$s/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$s/ftps.key" -out "$s/ftps.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$s/san.ext"
  openssl x509 -req -in "$s/ftps.csr" -CA "$s/ca.crt" -CAkey "$s/ca.key" -CAcreateserial -days 2 -extfile "$s/san.ext" -out "$s/ftps.crt" 2>/dev/null

  ssh-keygen -q -t ed25519 -N '' -f "$s/ssh_host_ed25519_key"
  ssh-keygen -q -t ed25519 -N '' -f "$s/client_key"
  cp "$s/client_key.pub" "$s/authorized_keys"
  mkdir -p /run/sshd
  # ports below the ephemeral range, where a connection of this machine's own cannot hold them;
  # another listener can, so a failed start tries other ports
  local attempt
  for attempt in 1 2 3 4 5; do
    tp_launch_servers "$s" "$user" "$(tp_server_base)" && break
    [ $attempt = 5 ] && { tp_log "the servers did not start on five sets of ports"; return 1; }
    tp_log "starting the servers again on other ports"
  done
  export TP_FTP_PASSWORD TP_SERVER_HOME="$s/home"
  export TP_FTPS_CA="$s/ca.crt" TP_SFTP_IDENTITY="$s/client_key" TP_SFTP_KNOWN_HOSTS="$s/known_hosts"
}

# tp_server_base: a random first port for the servers (they use it and the next 129), below the
# kernel's ephemeral range.
tp_server_base() {
  local lo
  lo=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  if [ "$lo" -gt 10200 ]; then echo $((10000 + RANDOM % (lo - 10000 - 130))); else echo $((lo + 1000 + RANDOM % 20000)); fi
}

# tp_launch_servers DIR USER BASE: writes the configs for ports BASE.., starts the servers and
# waits for them; exports the URLs. On failure stops what it started and returns 1.
tp_launch_servers() {
  local s=$1 user=$2 base=$3
  local p_ftp=$base p_ftps=$((base + 1)) p_ftp2=$((base + 2)) p_sftp=$((base + 3)) pasv=$((base + 10))
  local common="listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
seccomp_sandbox=NO
pasv_enable=YES
pasv_address=127.0.0.1
secure_chroot_dir=$s/empty
pam_service_name=vsftpd
userlist_enable=NO
background=NO
xferlog_enable=NO
max_per_ip=0
max_clients=0"
  printf '%s\nlisten_port=%s\npasv_min_port=%s\npasv_max_port=%s\n' "$common" $p_ftp $pasv $((pasv + 39)) > "$s/vsftpd-ftp.conf"
  printf '%s\nlisten_port=%s\npasv_min_port=%s\npasv_max_port=%s\nssl_enable=YES\nrsa_cert_file=%s\nrsa_private_key_file=%s\nforce_local_logins_ssl=YES\nforce_local_data_ssl=YES\nssl_sslv2=NO\nssl_sslv3=NO\nssl_tlsv1=YES\n' \
    "$common" $p_ftps $((pasv + 40)) $((pasv + 79)) "$s/ftps.crt" "$s/ftps.key" > "$s/vsftpd-ftps.conf"
  vsftpd "$s/vsftpd-ftp.conf" > "$s/vsftpd-ftp.log" 2>&1 & echo $! > "$s/vsftpd-ftp.pid"
  vsftpd "$s/vsftpd-ftps.conf" > "$s/vsftpd-ftps.log" 2>&1 & echo $! > "$s/vsftpd-ftps.pid"
  # test files run side by side (test lanes), each with several connections open: the connection
  # limits (pure-ftpd's -c/-C, sshd's MaxStartups) are far above what they open at once
  "$(tp_pure_ftpd)" -S "127.0.0.1,$p_ftp2" -l unix -E -p "$((pasv + 80)):$((pasv + 119))" -P 127.0.0.1 -u 100 -c 200 -C 200 > "$s/pure-ftpd.log" 2>&1 & echo $! > "$s/pure-ftpd.pid"

  printf '[127.0.0.1]:%s %s\n' $p_sftp "$(cut -d' ' -f1-2 "$s/ssh_host_ed25519_key.pub")" > "$s/known_hosts"
  cat > "$s/sshd_config" <<SSHD
Port $p_sftp
ListenAddress 127.0.0.1
HostKey $s/ssh_host_ed25519_key
PidFile $s/sshd.pid
AuthorizedKeysFile $s/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PermitRootLogin no
Subsystem sftp internal-sftp
MaxStartups 200
MaxSessions 200
SSHD
  /usr/sbin/sshd -D -e -f "$s/sshd_config" > "$s/sshd.log" 2>&1 & echo $! > "$s/sshd-launcher.pid"

  local pidfiles=("$s/vsftpd-ftp.pid" "$s/vsftpd-ftps.pid" "$s/pure-ftpd.pid" "$s/sshd-launcher.pid")
  TP_PIDFILES+=("${pidfiles[@]}")
  local port i f ok=1
  for port in $p_ftp $p_ftps $p_ftp2 $p_sftp; do
    for i in $(seq 1 50); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.2
    done
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { tp_log "server on port $port did not start"; ok=0; break; }
  done
  # a server that could not bind its port exits (vsftpd silently): the port may answer for
  # something else, so every server must still be running
  sleep 0.3
  for f in "${pidfiles[@]}"; do
    kill -0 "$(cat "$f")" 2>/dev/null || { [ $ok = 0 ] || tp_log "the server of $(basename "$f" .pid) exited"; ok=0; }
  done
  if [ $ok = 0 ]; then
    tail -n 20 "$s"/*.log >&2
    for f in "${pidfiles[@]}"; do kill "$(cat "$f")" 2>/dev/null || true; done
    return 1
  fi
  export TP_FTP_URL="ftp://$user@127.0.0.1:$p_ftp$s/home"
  export TP_FTPS_URL="ftps://$user@127.0.0.1:$p_ftps$s/home"
  export TP_FTP2_URL="ftp://$user@127.0.0.1:$p_ftp2$s/home"
  export TP_SFTP_URL="sftp://$user@127.0.0.1:$p_sftp$s/home"
}

# tp_start_s3: s3rver (npm, a devDependency), an S3-compatible server in a process of its own, on
# loopback and a random high port, storing into $TP_RUN/s3, with the bucket "tarport" made at start.
# s3rver accepts one key pair, S3RVER/S3RVER. Exports TP_S3_ENDPOINT, TP_S3_BUCKET, TP_S3_ACCESS_KEY,
# TP_S3_SECRET_KEY (tests hand them to the AWS chain as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
tp_start_s3() {
  local d="$TP_RUN/s3" attempt port i
  mkdir -p "$d/data"
  for attempt in 1 2 3 4 5; do
    port=$(( $(tp_server_base) + 120 ))
    node "$TP_ROOT/node_modules/s3rver/bin/s3rver.js" -d "$d/data" -a 127.0.0.1 -p "$port" --silent \
      --configure-bucket tarport >"$d/s3rver.log" 2>&1 & echo $! > "$d/s3rver.pid"
    TP_PIDFILES+=("$d/s3rver.pid")
    for i in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
    sleep 0.3
    if kill -0 "$(cat "$d/s3rver.pid")" 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      export TP_S3_ENDPOINT="http://127.0.0.1:$port" TP_S3_BUCKET=tarport TP_S3_ACCESS_KEY=S3RVER TP_S3_SECRET_KEY=S3RVER
      return 0
    fi
    kill "$(cat "$d/s3rver.pid")" 2>/dev/null || true
    tail -n 5 "$d/s3rver.log" >&2
    tp_log "starting s3rver again on another port"
  done
  tp_log "s3rver did not start on five ports"; return 1
}

# tp_nginx_conf TEMPLATE OUT NAME=VALUE...: renders one of contrib/nginx/*.conf (the files docs/mirror.md
# gives users) with the @NAME@ placeholders replaced.
tp_nginx_conf() {
  local tpl=$1 out=$2; shift 2
  cp "$tpl" "$out"
  local kv
  for kv in "$@"; do
    local k=${kv%%=*} v=${kv#*=}
    sed -i "s|@$k@|$v|g" "$out"
  done
  if grep -v '^ *#' "$out" | grep -q '@[A-Z_]*@'; then tp_log "unreplaced placeholders in $out"; return 1; fi
}

# tp_run_nginx NAME SERVERCONF: one nginx of our own around a server block, in the run dir.
tp_run_nginx() {
  local name=$1 server=$2 d="$TP_RUN/nginx-$1"
  mkdir -p "$d/tmp"
  # njs (libnginx-mod-http-js) for contrib/nginx/registry.js, as Debian's own nginx.conf loads it
  cat > "$d/nginx.conf" <<NGINX
load_module /usr/lib/nginx/modules/ngx_http_js_module.so;
daemon off;
master_process on;
worker_processes 2;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
  log_format tarport '\$remote_addr "\$request" \$status \$body_bytes_sent \$bytes_sent';
  access_log $d/access.log tarport;
  sendfile on;
  client_body_temp_path $d/tmp/client;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  include $server;
}
NGINX
  nginx -t -q -c "$d/nginx.conf" -p "$d" 2>"$d/check.log" || { tp_log "nginx ($name) config refused:"; cat "$d/check.log" >&2; return 1; }
  nginx -c "$d/nginx.conf" -p "$d" >"$d/stdout.log" 2>&1 & echo $! > "$d/launcher.pid"
  TP_PIDFILES+=("$d/launcher.pid")
}

# tp_nginx_registry BASE: the registry mapping (contrib/nginx/registry.conf) for the repository
# $TP_RUN/www/registry, included in the origin's server block (so the caching tier passes it on) and
# in a plain-HTTP server of the origin's nginx on BASE+2 (docker accepts plain HTTP on loopback).
tp_nginx_registry() {
  local base=$1 conf="$TP_RUN/origin-server.conf" loc="$TP_RUN/registry-locations.conf"
  mkdir -p "$TP_RUN/www/registry"
  tp_nginx_conf "$TP_ROOT/contrib/nginx/registry.conf" "$loc" "REPO=$TP_RUN/www/registry" "REGISTRY_JS=$TP_ROOT/contrib/nginx/registry.js" || return 1
  # the rendered origin.conf ends with its server block's closing brace: the include goes before it
  local body; body=$(cat "$conf")
  [ "${body##*$'\n'}" = "}" ] || { tp_log "$conf does not end with its server block's closing brace"; return 1; }
  printf '%s\n    include %s;\n}\n\nserver {\n    listen 127.0.0.1:%s;\n    server_name localhost;\n    include %s;\n}\n' \
    "${body%$'\n'*}" "$loc" "$((base + 2))" "$loc" > "$conf"
}

# tp_start_nginx: an HTTPS origin serving $TP_WWW_ROOT (repositories go into folders of it) with the
# servers' CA (run tp_start_servers first), and a caching tier in front of it over plain HTTP; both
# from the configs docs/mirror.md gives. Exports TP_WWW_ROOT, TP_HTTPS_URL, TP_HTTP_CACHE_URL,
# TP_NGINX_ORIGIN_LOG, TP_NGINX_CACHE_LOG, and for the registry mapping TP_REGISTRY_REPO, TP_REGISTRY_ORIGIN
# (plain HTTP) and TP_REGISTRY_CACHE (the caching tier).
tp_start_nginx() {
  local s="$TP_RUN/servers" attempt base
  mkdir -p "$TP_RUN/www" "$TP_RUN/nginx-cache-data"
  chmod 755 "$TP_RUN/www"
  for attempt in 1 2 3 4 5; do
    base=$(tp_server_base)
    tp_nginx_conf "$TP_ROOT/contrib/nginx/origin.conf" "$TP_RUN/origin-server.conf" \
      "LISTEN=127.0.0.1:$base" SERVER_NAME=localhost "CERT=$s/ftps.crt" "KEY=$s/ftps.key" "ROOT=$TP_RUN/www"
    tp_nginx_conf "$TP_ROOT/contrib/nginx/cache.conf" "$TP_RUN/cache-server.conf" \
      "LISTEN=127.0.0.1:$((base + 1))" SERVER_NAME=localhost "CACHE_DIR=$TP_RUN/nginx-cache-data" \
      "ORIGIN=127.0.0.1:$base" ORIGIN_NAME=localhost "CA=$s/ca.crt"
    tp_nginx_registry "$base" || return 1
    tp_run_nginx origin "$TP_RUN/origin-server.conf" && tp_run_nginx cache "$TP_RUN/cache-server.conf" || return 1
    local port i ok=1
    for port in $base $((base + 1)) $((base + 2)); do
      for i in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || ok=0
    done
    sleep 0.3
    for n in origin cache; do kill -0 "$(cat "$TP_RUN/nginx-$n/launcher.pid")" 2>/dev/null || ok=0; done
    if [ $ok = 1 ]; then
      export TP_WWW_ROOT="$TP_RUN/www" TP_HTTPS_URL="https://127.0.0.1:$base" TP_HTTP_CACHE_URL="http://127.0.0.1:$((base + 1))"
      export TP_NGINX_ORIGIN_LOG="$TP_RUN/nginx-origin/access.log" TP_NGINX_CACHE_LOG="$TP_RUN/nginx-cache/access.log"
      export TP_REGISTRY_REPO="$TP_RUN/www/registry" TP_REGISTRY_ORIGIN="127.0.0.1:$((base + 2))" TP_REGISTRY_CACHE="127.0.0.1:$((base + 1))"
      return 0
    fi
    tail -n 5 "$TP_RUN"/nginx-*/error.log "$TP_RUN"/nginx-*/stdout.log >&2 2>/dev/null
    for n in origin cache; do kill "$(cat "$TP_RUN/nginx-$n/launcher.pid")" 2>/dev/null || true; done
    tp_log "starting nginx again on other ports"
  done
  tp_log "nginx did not start on five sets of ports"; return 1
}
