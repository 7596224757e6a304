# Sourced by scripts/bench after bench_build_images: the whole job against what a user would do
# instead, on the same images, servers and daemons (issue 16). Each contender moves an image from the
# producer daemon to the consumer daemon, starting from `docker save`'s side of things:
#   book      docker save; upload the archive (curl to vsftpd on loopback; scp through a shaped
#             link); download it the same way; docker load
#   pipeline  docker save | zstd -T2 | ssh HOST 'zstd -d | docker load' (the test sshd; the consumer
#             daemon on the far side); an update resends everything
#   skopeo    docker save; skopeo copy docker-archive:… oci:DIR; DIR up and down (cp -r on loopback,
#             scp -r through a link); skopeo copy oci:DIR docker-daemon:… (fresh images only: an
#             OCI directory has no way to send only what the far side lacks). skopeo 1.9's
#             docker-daemon: transport ignores DOCKER_HOST (it fails with "writing blob: io:
#             read/write on closed pipe"): the daemon is named with --dest-daemon-host
#   tarport   docker save | tarport push - over SFTP (its new layers go up while the archive still
#             comes: docs/producer.md, "From a pipe"); tarport pull (and load) over SFTP
# and Docker's own share, on loopback only (no link is crossed), the floor under the targets:
#   save      docker save -o alone: the first step of every contender's job (an update's too)
#   docker    docker save -o, then docker load -i of that file into the consumer daemon: the two
#             steps of a store-and-forward job with the transfer taken out
# for cases: fresh (v1 into an empty daemon), update (v2 into a daemon holding v1), many (40 layers)
# and few (the same bytes in 4), each on loopback and through the tests' own proxy shaped to
# 1 Gbit/s and 100 Mbit/s (BENCH_LINKS). A row: wall seconds, bytes over the link (the proxy's
# count; a loopback row shows the shaped rows' count), peak RSS of the largest client process, CPU
# seconds of the clients plus the daemons, servers and proxy they kept busy. One line of JSON per
# row in $W/jobs.jsonl. Then push to a directory vs skopeo's copy into an OCI directory, and sync
# dir → dir vs cp -r + sha256sum -c with the physical limit ($W/sync.json).
J="$W/jobs"; mkdir -p "$J"; : > "$W/jobs.jsonl"
S="$TP_RUN/servers"
suser=${TP_SFTP_URL#sftp://}; suser=${suser%%@*}
sshport=$(echo "$TP_SFTP_URL" | sed -E 's#^sftp://[^@]+@127\.0\.0\.1:([0-9]+)/.*#\1#')
ftpport=$(echo "$TP_FTP_URL" | sed -E 's#^ftp://[^@]+@127\.0\.0\.1:([0-9]+)/.*#\1#')
home=$TP_SERVER_HOME
csock=${TP_SOCK_consumer#unix://}
# the pipeline's far side runs as the server's user: it may use the consumer daemon (this run's own)
chmod 666 "$csock"
CLK=$(getconf CLK_TCK)

# cpu_of PID...: CPU seconds (×CLK_TCK) of these processes, their threads, their children still
# running and the children they waited for (sshd's and vsftpd's sessions, dockerd's containerd)
cpu_of() {
  local p c t=0
  for p in "$@"; do
    for c in $p $(pgrep -P "$p" 2>/dev/null || true); do
      [ -r "/proc/$c/stat" ] || continue
      # fields after the command: utime stime cutime cstime are the 14th..17th of the line
      t=$((t + $(sed -E 's/^.*\) //' "/proc/$c/stat" | awk '{print $12 + $13 + $14 + $15}')))
    done
  done
  echo $t
}
# one pid a line: dockerd writes its pid file without a newline, so a plain `cat` of the files ran
# the daemons' pids and the sshd's together into one number that named no process (their CPU read 0)
server_pids() {
  local f
  for f in "$TP_RUN/docker-producer/dockerd.pid" "$TP_RUN/docker-consumer/dockerd.pid" "$S/sshd-launcher.pid" "$S/vsftpd-ftp.pid"; do
    [ -r "$f" ] || { tp_log "bench: no pid file $f: that server's CPU is left out of the CPU column"; continue; }
    echo "$(< "$f")"
  done
  [ -z "${PROXY_PID:-}" ] || echo "$PROXY_PID"
}
link_bytes() { if [ -n "${PROXY_PID:-}" ]; then cat "$W/proxy.stats"; else echo null; fi; }

# job CASE CONTENDER CMD: runs CMD (bash, pipefail) and appends its row to $W/jobs.jsonl (a
# failed job too, marked failed, with the end of its error output)
job() {
  local case=$1 who=$2 cmd=$3 id="$1-$2-$LINK"
  local pids; pids=$(server_pids | tr '\n' ' ')
  sync
  local b0 c0; b0=$(link_bytes); c0=$(cpu_of $pids)
  if ! /usr/bin/time -f '%e %M %U %S' -o "$J/$id.time" bash -c "set -eo pipefail; $cmd" > "$J/$id.out" 2> "$J/$id.err"; then
    # recorded as failed, with its last words, and the run goes on: the report lists it
    tp_log "$id FAILED:"; tail -n 20 "$J/$id.err" >&2
    printf '{"case":"%s","contender":"%s","link":"%s","failed":true,"error":%s}\n' "$case" "$who" "$LINK" \
      "$(grep -v '^Command exited' "$J/$id.err" | tail -n 3 | node -e 'process.stdout.write(JSON.stringify(require("fs").readFileSync(0, "utf8").trim()))')" >> "$W/jobs.jsonl"
    return 0
  fi
  sleep 0.3 # the proxy writes its count within 100 ms
  local b1 c1 wall rss usr sys; b1=$(link_bytes); c1=$(cpu_of $pids)
  read -r wall rss usr sys < "$J/$id.time"
  local bytes=null; [ "$b0" = null ] || bytes=$((b1 - b0))
  printf '{"case":"%s","contender":"%s","link":"%s","seconds":%s,"bytes":%s,"peakRssKiB":%s,"clientCpuSeconds":%s,"cpuSeconds":%s}\n' \
    "$case" "$who" "$LINK" "$wall" "$bytes" "$rss" "$(awk "BEGIN { printf \"%.2f\", $usr + $sys }")" "$(awk "BEGIN { printf \"%.2f\", $usr + $sys + ($c1 - $c0) / $CLK }")" >> "$W/jobs.jsonl"
  tp_log "$(printf '%-8s %-8s %-9s %7.2f s' "$case" "$who" "$LINK" "$wall")"
}

empty_consumer() { local ids; ids=$(tp_docker consumer images -aq); [ -z "$ids" ] || tp_docker consumer rmi -f $ids >/dev/null; }
clean_server() { rm -rf "$home/book.tar" "$home/oci" "$home/repo"; }

# the commands; $PORT is the sshd's port or the proxy's in front of it, $KH the known_hosts for it
P="DOCKER_HOST=$TP_SOCK_producer $TP_DOCKER"
C="DOCKER_HOST=$TP_SOCK_consumer $TP_DOCKER"
TP="node $TP_ROOT/bin/tarport.js"
sshopts() { echo "-o UserKnownHostsFile=$KH -o BatchMode=yes -i $TP_SFTP_IDENTITY"; }
cmd_book() { # IMAGE
  local up down
  if [ "$LINK" = loopback ]; then
    local f="ftp://127.0.0.1:$ftpport/%2F${home#/}/book.tar"
    up="curl -sS --user '$suser:$TP_FTP_PASSWORD' -T $W/book.tar '$f'"
    down="curl -sS --user '$suser:$TP_FTP_PASSWORD' -o $W/book-dl.tar '$f'"
  else
    up="scp -q $(sshopts) -P $PORT $W/book.tar $suser@127.0.0.1:$home/book.tar"
    down="scp -q $(sshopts) -P $PORT $suser@127.0.0.1:$home/book.tar $W/book-dl.tar"
  fi
  echo "$P save -o $W/book.tar $1; $up; $down; $C load -q -i $W/book-dl.tar; rm -f $W/book.tar $W/book-dl.tar"
}
cmd_pipeline() { # IMAGE
  echo "$P save $1 | zstd -q -T2 -c | ssh $(sshopts) -p $PORT $suser@127.0.0.1 'zstd -q -d -c | DOCKER_HOST=$TP_SOCK_consumer $TP_DOCKER load -q'"
}
cmd_skopeo() { # IMAGE
  local up down
  if [ "$LINK" = loopback ]; then up="cp -r $W/oci $home/oci"; down="cp -r $home/oci $W/oci-dl"
  else up="scp -q -r $(sshopts) -P $PORT $W/oci $suser@127.0.0.1:$home/oci"; down="scp -q -r $(sshopts) -P $PORT $suser@127.0.0.1:$home/oci $W/oci-dl"; fi
  echo "rm -rf $W/oci $W/oci-dl; $P save -o $W/sk.tar $1; skopeo copy -q docker-archive:$W/sk.tar oci:$W/oci:$1; $up; $down; skopeo copy -q --dest-daemon-host $TP_SOCK_consumer oci:$W/oci-dl:$1 docker-daemon:$1; rm -rf $W/sk.tar $W/oci $W/oci-dl"
}
cmd_save() { # IMAGE
  echo "$P save -o $W/floor.tar $1; rm -f $W/floor.tar"
}
cmd_docker() { # IMAGE
  echo "$P save -o $W/floor.tar $1; $C load -q -i $W/floor.tar; rm -f $W/floor.tar"
}
cmd_tarport() { # IMAGE
  local url="sftp://$suser@127.0.0.1:$PORT$home/repo" keys="--identity $TP_SFTP_IDENTITY --known-hosts $KH"
  echo "$P save $1 | $TP push --init - --to $url $keys --json > $J/$CASE-tarport-$LINK.push.json; DOCKER_HOST=$TP_SOCK_consumer $TP pull --from $url $keys --state $W/tp-state --json > $J/$CASE-tarport-$LINK.pull.json"
}

# known_hosts naming the sshd's key under its own port and every proxy's
KH="$W/jobs_known_hosts"; cp "$TP_SFTP_KNOWN_HOSTS" "$KH"
hostkey=$(cut -d' ' -f2- "$TP_SFTP_KNOWN_HOSTS" | head -n 1)
start_link() { # RATE (bytes/s): a proxy in front of the sshd; sets PORT and PROXY_PID
  rm -f "$W/proxy.port" "$W/proxy.stats"
  node "$TP_ROOT/scripts/lib/rateproxy.mjs" "$sshport" stream "$1" "$W/proxy.stats" > "$W/proxy.port" &
  PROXY_PID=$!
  local i; for i in $(seq 1 100); do [ -s "$W/proxy.port" ] && [ -s "$W/proxy.stats" ] && break; sleep 0.1; done
  PORT=$(cat "$W/proxy.port"); [ -n "$PORT" ] || { tp_log "the rate proxy did not start"; return 1; }
  echo "[127.0.0.1]:$PORT $hostkey" >> "$KH"
}
stop_link() { [ -z "${PROXY_PID:-}" ] || { kill "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true; }; PROXY_PID=; }

LINKS=${BENCH_LINKS:-loopback 1gbit 100mbit}
CONTENDERS=${BENCH_CONTENDERS:-book pipeline skopeo tarport save docker}
for LINK in $LINKS; do
  case $LINK in
    loopback) PORT=$sshport; PROXY_PID=;;
    1gbit) start_link 125000000;;
    100mbit) start_link 12500000;;
    *) tp_log "BENCH_LINKS: unknown link $LINK (loopback, 1gbit, 100mbit)"; exit 2;;
  esac
  tp_log "jobs on link $LINK"
  for who in $CONTENDERS; do
    # Docker's own share crosses no link: measured once, on loopback
    case $who in save | docker) [ "$LINK" = loopback ] || continue ;; esac
    empty_consumer; clean_server; rm -rf "$W/tp-state"
    CASE=fresh; job fresh "$who" "$(cmd_$who tarport-bench/app:1)"
    if [ "$who" != skopeo ]; then
      # the repository, the consumer's state and v1 in the daemon stay: only v2 is new
      CASE=update; job update "$who" "$(cmd_$who tarport-bench/app:2)"
      # the records say which of v2's layers are new and their compressed size (the report's target)
      [ "$who" != tarport ] || cp -r "$home/repo/tarport/releases" "$J/releases-$LINK"
    fi
    # the 40-layer image against 4 layers on BENCH_MANY_LINKS (default: every link)
    [[ " ${BENCH_MANY_LINKS:-$LINKS} " == *" $LINK "* ]] || continue
    for img in many few; do
      empty_consumer; clean_server; rm -rf "$W/tp-state"
      CASE=$img; job $img "$who" "$(cmd_$who tarport-bench/$img:1)"
    done
  done
  stop_link
done
empty_consumer; clean_server; rm -rf "$W/tp-state"

tp_log "push to a directory vs skopeo copy docker-archive: → oci: (the v1 archive, ${ROUNDS} rounds)"
for r in $(seq 1 "$ROUNDS"); do
  rm -rf "$W/dirrepo" "$W/ocidir"; sync
  measure "dirpush_$r" node bin/tarport.js push --init "$W/v1.tar" --to "$W/dirrepo" --json
  sync
  measure "skopeo_oci_$r" skopeo copy -q "docker-archive:$W/v1.tar" "oci:$W/ocidir:tarport-bench/app:1"
done
rm -rf "$W/ocidir"

for f in v2 many few; do node bin/tarport.js push --init "$W/$f.tar" --to "$W/dirrepo" >/dev/null 2>&1; done
source scripts/lib/bench-sync.sh
bench_sync
rm -rf "$W/dirrepo"
