# Sourced by scripts/bench (from bench-jobs.sh, or alone: BENCH_ONLY=sync): tarport sync of the
# directory repository $W/dirrepo into a fresh directory against what a user does for the same work,
# `cp -r` then `sha256sum -c` of every object (copy and verify), alternating, $ROUNDS rounds, each
# after `sync` so that neither starts with the other's dirty pages; then the physical limit,
# measured now: the larger of bytes ÷ disk write bandwidth (1 GiB, flushed) and bytes ÷ (cores ×
# one core's SHA-256). Writes base_cpsum_N.time, syncdir_N.time (wall, peak RSS, user and system
# CPU seconds), $W/sync.json and $W/sync-load.txt (each measurement's load averages: the machine is
# shared).
bench_sync() {
  tp_log "sync dir → dir vs cp -r + sha256sum -c of every object (the same work: copy and verify), ${ROUNDS} rounds"
  local syncBytes r
  syncBytes=$(du -sb "$W/dirrepo" | cut -f1)
  (cd "$W/dirrepo/blobs/sha256" && for h in *; do echo "$h  $h"; done) > "$W/objects.sha256"
  : > "$W/sync-load.txt"
  for r in $(seq 1 "$ROUNDS"); do
    rm -rf "$W/stick" "$W/cp"; sync
    measure "base_cpsum_$r" bash -c "cp -r '$W/dirrepo' '$W/cp' && sync && cd '$W/cp/blobs/sha256' && sha256sum --quiet -c '$W/objects.sha256'"
    echo "base_cpsum_$r $(cut -d' ' -f1-3 /proc/loadavg)" >> "$W/sync-load.txt"
    rm -rf "$W/cp"; sync
    measure "syncdir_$r" node bin/tarport.js sync --init "$W/dirrepo" "$W/stick"
    echo "syncdir_$r $(cut -d' ' -f1-3 /proc/loadavg)" >> "$W/sync-load.txt"
  done
  rm -rf "$W/stick" "$W/cp"
  local diskSecs shaMBs
  /usr/bin/time -f %e -o "$W/disk.time" dd if=/dev/zero of="$W/disk.bin" bs=1M count=1024 conv=fdatasync 2>/dev/null
  diskSecs=$(cat "$W/disk.time")
  rm -f "$W/disk.bin"
  shaMBs=$(node -e 'const c=require("crypto");const b=Buffer.alloc(1<<20,7);const h=c.createHash("sha256");const t=process.hrtime.bigint();for(let i=0;i<1024;i++)h.update(b);h.digest();console.log((1024*1048576/1e6/(Number(process.hrtime.bigint()-t)/1e9)).toFixed(0))')
  printf '{"bytes":%s,"objects":%s,"diskMBps":%s,"sha256MBpsPerCore":%s,"cores":%s}\n' "$syncBytes" "$(wc -l < "$W/objects.sha256")" \
    "$(awk "BEGIN { printf \"%d\", 1073.741824 / $diskSecs }")" "$shaMBs" "$(nproc)" > "$W/sync.json"
}
