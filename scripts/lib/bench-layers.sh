# Sourced by scripts/bench with BENCH_ONLY=layers: the per-layer cost of tarport, the 40-layer image
# (many.tar) against the same bytes in 4 layers (few.tar), each pushed over SFTP to the test sshd
# and pulled (and loaded) from there into an empty consumer daemon, as the jobs' rows do but without
# docker save (the same for any tool) and with push and pull timed apart. Alternating many and few,
# $ROUNDS rounds, each push into an empty repository; beside each pull, docker load -i of the same
# archive (the daemon's own cost of 40 layers, which bounds the ratio any tool can reach). Writes
# push_IMG_N.time, load_IMG_N.time and pull_IMG_N.time
# (wall, peak RSS, user and system CPU seconds), their --json output (requests, bytes) and
# $W/layers-load.txt (each measurement's load averages).
bench_layers() {
  local keys=(--identity "$TP_SFTP_IDENTITY" --known-hosts "$TP_SFTP_KNOWN_HOSTS")
  local r img url
  : > "$W/layers-load.txt"
  tp_log "40 layers vs 4: push over SFTP, then pull and load into an empty daemon, alternating, $ROUNDS rounds"
  for r in $(seq 1 "$ROUNDS"); do
    for img in many few; do
      url="$TP_SFTP_URL/repo-$img"
      rm -rf "$TP_SERVER_HOME/repo-$img"; sync
      measure "push_${img}_$r" node bin/tarport.js push --init "$W/$img.tar" --to "$url" "${keys[@]}" --json
      echo "push_${img}_$r $(cut -d' ' -f1-3 /proc/loadavg)" >> "$W/layers-load.txt"
      # the daemon's own cost of many layers: docker load -i of the same archive, into an empty daemon
      empty_consumer
      measure "load_${img}_$r" env DOCKER_HOST="$TP_SOCK_consumer" "$TP_DOCKER" load -q -i "$W/$img.tar"
      echo "load_${img}_$r $(cut -d' ' -f1-3 /proc/loadavg)" >> "$W/layers-load.txt"
      empty_consumer; rm -rf "$W/state-$img"
      measure "pull_${img}_$r" env DOCKER_HOST="$TP_SOCK_consumer" node bin/tarport.js pull --from "$url" "${keys[@]}" --state "$W/state-$img" --json
      echo "pull_${img}_$r $(cut -d' ' -f1-3 /proc/loadavg)" >> "$W/layers-load.txt"
    done
  done
  rm -rf "$TP_SERVER_HOME/repo-many" "$TP_SERVER_HOME/repo-few" "$W/state-many" "$W/state-few"
  empty_consumer
}
