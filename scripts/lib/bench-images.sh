# Sourced by scripts/bench: the images every row measures, built in daemon $1 from files already
# on this machine (nothing downloaded) and saved into $2:
#   v1.tar     tarport-bench/app:1, >= $3 MiB in 5 layers: a busybox base, three layers of shared
#              libraries and the like (zstd -3 shrinks them about 3x) and one of random bytes (30 %
#              or more: it fills up to $3 MiB what the files come short of)
#   v2.tar     tarport-bench/app:2 = v1 + one layer of BENCH_UPDATE_MB (8) MiB of random bytes
#   many.tar   tarport-bench/many:1, 40 small layers (BENCH_MANY_MB, 80 MB, in all)
#   few.tar    tarport-bench/few:1, the same 40 pieces of files in 4 layers
# BENCH_IMAGES ("v1 v2 many few") chooses which of them are built.
bench_build_images() {
  local d=$1 W=$2 MB=$3
  local ctx="$W/ctx" many=${BENCH_MANY_MB:-80} upd=${BENCH_UPDATE_MB:-8}
  tp_log "building the images: ${MB} MB in 5 layers, its update (+${upd} MiB), ${many} MB in 40 and in 4 layers"
  rm -rf "$ctx"; mkdir -p "$ctx/rootfs/bin"
  cp "$(command -v busybox)" "$ctx/rootfs/bin/busybox"; ln -sf busybox "$ctx/rootfs/bin/sh"
  tar -C "$ctx/rootfs" -cf "$ctx/base.tar" .
  tp_docker "$d" import "$ctx/base.tar" tarport-bench/base:1 >/dev/null
  # files of this machine, in a fixed order, cut into pieces of a given size: sys1..3 for v1 and
  # p01..p40 for the many-layer image (from the other end of the list: other bytes)
  { find /usr/lib /usr/share /usr/bin /usr/local -xdev -type f -size +8k -printf '%s %p\n' 2>/dev/null | sort -k2 > "$ctx/all.txt"; } || true
  local sys=$((MB * 7 / 10 * 1024 * 1024 / 3))
  awk -v each=$sys -v dir="$ctx" '{ if (n < 3 && t + $1 > each) { n++; t = 0 } if (n >= 3) exit; t += $1; sub(/^[0-9]+ /, ""); print > (dir "/sys" (n + 1) ".txt") }' "$ctx/all.txt"
  local i
  for i in 1 2 3; do tar -cf "$ctx/sys$i.tar" -T "$ctx/sys$i.txt" 2>/dev/null || true; done
  # random bytes fill up to MB: files of this machine come short of their share (hard links are
  # stored once, some files cannot be read), and the image must still be MB (>= 1 GiB by default)
  local sysBytes; sysBytes=$(cat "$ctx"/sys?.tar | wc -c)
  local rnd=$((MB * 1024 * 1024 - sysBytes)); [ "$rnd" -ge $((MB * 3 / 10 * 1024 * 1024)) ] || rnd=$((MB * 3 / 10 * 1024 * 1024))
  head -c "$rnd" /dev/urandom > "$ctx/random.bin"
  head -c $((upd * 1024 * 1024)) /dev/urandom > "$ctx/update.bin"
  printf 'FROM tarport-bench/base:1\nADD sys1.tar /data/\nADD sys2.tar /data/\nCOPY random.bin /data/random.bin\nADD sys3.tar /data/\n' > "$ctx/Dockerfile.v1"
  { cat "$ctx/Dockerfile.v1"; printf 'COPY update.bin /data/update.bin\n'; } > "$ctx/Dockerfile.v2"
  local piece=$((many * 1024 * 1024 / 40))
  { tac "$ctx/all.txt" | awk -v each=$piece -v dir="$ctx" '{ if (t + $1 > each && t > 0) { n++; t = 0 } if (n >= 40) exit; t += $1; sub(/^[0-9]+ /, ""); printf "%s\n", $0 > (dir "/p" sprintf("%02d", n + 1) ".txt") }'; } || true
  { echo 'FROM tarport-bench/base:1'; for i in $(seq -w 1 40); do tar -cf "$ctx/p$i.tar" -T "$ctx/p$i.txt" 2>/dev/null || true; echo "ADD p$i.tar /data/"; done; } > "$ctx/Dockerfile.many"
  { echo 'FROM tarport-bench/base:1'; for i in 0 1 2 3; do printf 'ADD'; for j in $(seq 1 10); do printf ' p%02d.tar' $((i * 10 + j)); done; echo ' /data/'; done; } > "$ctx/Dockerfile.few"
  rm -f "$ctx"/*.txt
  local img
  for img in v1:app:1 v2:app:2 many:many:1 few:few:1; do
    case " ${BENCH_IMAGES:-v1 v2 many few} " in *" ${img%%:*} "*) ;; *) continue ;; esac
    DOCKER_BUILDKIT=0 tp_docker "$d" build -q --network none -f "$ctx/Dockerfile.${img%%:*}" -t "tarport-bench/${img#*:}" "$ctx" >/dev/null
    tp_docker "$d" save -o "$W/${img%%:*}.tar" "tarport-bench/${img#*:}"
  done
  rm -rf "$ctx"
  tp_log "images:$([ ! -f "$W/v1.tar" ] || echo " v1 $(($(stat -c %s "$W/v1.tar") / 1048576)) MiB, v2 +${upd} MiB")$([ ! -f "$W/many.tar" ] || echo " many $(($(stat -c %s "$W/many.tar") / 1048576)) MiB in 40 layers, few in 4")"
}
