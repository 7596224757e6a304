# tp_node_dist VERSION ARCH: prints the path of Node's own binary (from the npm package node-linux-ARCH,
# which carries Node's release binaries), installed once into a cache. Source it; do not run it.
# Used by scripts/build-sea (the executable's runtime) and scripts/test (the suite on a supported Node).
tp_node_dist() {
  local version=$1 arch=$2
  local dir="${XDG_CACHE_HOME:-$HOME/.cache}/tarport/node-linux-$arch@$version"
  local bin="$dir/node_modules/node-linux-$arch/bin/node"
  if [ ! -x "$bin" ]; then
    mkdir -p "$dir"
    # --force: the arm64 package installs on an x64 host (its binary is only injected, never run here)
    local force=(); [ "$arch" = "$(node -p process.arch)" ] || force=(--force)
    (cd "$dir" && npm install --no-save --no-fund --no-audit --loglevel=error --ignore-scripts "${force[@]}" \
      --prefix "$dir" "node-linux-$arch@$version" >&2) || {
      echo "node-linux-$arch@$version: could not be installed from the npm registry" >&2; return 1; }
    [ -x "$bin" ] || { echo "node-linux-$arch@$version: installed, but $bin is missing" >&2; return 1; }
  fi
  echo "$bin"
}
