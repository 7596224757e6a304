# Sourced by scripts/bench after the Docker pull-and-load rows (or alone, BENCH_ONLY=runtimes), while
# $W/repo holds only v1:
#   containerd   tarport pull --runtime containerd  vs  ctr images import of the same archive
#   Podman       tarport pull --runtime podman      vs  podman load -i of the same archive
#   update       bytes a v2 pull into containerd reads vs v2's new compressed layers (+ 64 KiB)
# Each round starts from an empty store (containerd: a namespace of its own, emptied with --sync so
# its garbage collector has removed the content; Podman: rmi -a). Writes $W/runtimes-update.json and
# $W/runtimes-load.txt (each measurement's label and the load averages after it: the machine is shared)
# and $W/runtimes-path.txt (which way each Podman round loaded: registry-pull or upload).
# BENCH_BASE=DIR (another tarport checkout, built): each Podman round also runs DIR's tarport
# (podpull_base_N, after tarport's own), to compare two versions in the same run; BENCH_KEEP keeps
# its figures.
BNS=tarport-bench
rt_measure() {
  measure "$@"
  echo "$1 $(cut -d' ' -f1-3 /proc/loadavg)" >> "$W/runtimes-load.txt"
}
: > "$W/runtimes-load.txt"; : > "$W/runtimes-path.txt"
ctr_empty() {
  local names; names=$(tp_ctr -n $BNS images ls -q)
  if [ -n "$names" ]; then
    # shellcheck disable=SC2086
    tp_ctr -n $BNS images rm --sync $names >/dev/null
  fi
}
podman_empty() { tp_podman rmi -a -f >/dev/null 2>&1 || true; }

tp_log "containerd: ctr images import and tarport pull --runtime containerd, each into an empty namespace, $ROUNDS rounds"
for r in $(seq 1 "$ROUNDS"); do
  ctr_empty
  rt_measure "base_ctr_$r" ctr -a "$TP_CONTAINERD_SOCK" -n $BNS images import "$W/v1.tar"
  ctr_empty
  rm -rf "$W/cstate"
  rt_measure "ctrpull_$r" node bin/tarport.js pull --from "$W/repo" --state "$W/cstate" --runtime containerd --containerd-socket "$TP_CONTAINERD_SOCK" --namespace $BNS --json
done

tp_log "Podman: podman load -i and tarport pull --runtime podman, each into an empty store, $ROUNDS rounds"
for r in $(seq 1 "$ROUNDS"); do
  podman_empty
  rt_measure "base_podman_$r" podman $TP_PODMAN_ARGS load -q -i "$W/v1.tar"
  podman_empty
  rm -rf "$W/pstate"
  rt_measure "podpull_$r" node bin/tarport.js pull --from "$W/repo" --state "$W/pstate" --runtime podman --podman-socket "$TP_PODMAN_SOCK" --json
  # which way the image went in: Podman's pull from tarport's loopback registry, or the upload fallback
  if grep -q "pulled by Podman from tarport's loopback registry" "$W/podpull_$r.err"; then echo "podpull_$r registry-pull" >> "$W/runtimes-path.txt"
  else echo "podpull_$r upload" >> "$W/runtimes-path.txt"; tp_log "round $r: Podman took the upload fallback: $(grep -m1 'warning' "$W/podpull_$r.err")"; fi
  if [ -n "${BENCH_BASE:-}" ]; then
    podman_empty
    rm -rf "$W/pstate"
    rt_measure "podpull_base_$r" node "$BENCH_BASE/bin/tarport.js" pull --from "$W/repo" --state "$W/pstate" --runtime podman --podman-socket "$TP_PODMAN_SOCK" --json
  fi
done
podman_empty

tp_log "containerd update: v2 into a namespace that holds v1 (loaded by tarport above)"
rm -rf "$W/crepo"; cp -r "$W/repo" "$W/crepo"
node bin/tarport.js push "$W/v2.tar" --to "$W/crepo" --name tarport-bench/app:1 >/dev/null 2>&1
tp_ctr -n $BNS content ls -q | sort > "$W/ctr-content-v1.txt"
rt_measure "ctrupdate_1" node bin/tarport.js pull --from "$W/crepo" --state "$W/cstate" --runtime containerd --containerd-socket "$TP_CONTAINERD_SOCK" --namespace $BNS --json
# the blobs the update added to containerd's content store: the new layer (uncompressed: its digest
# is its diff ID), the new config and manifest, and nothing of v1's
tp_ctr -n $BNS content ls -q | sort > "$W/ctr-content-v2.txt"
comm -13 "$W/ctr-content-v1.txt" "$W/ctr-content-v2.txt" > "$W/ctr-content-added.txt"
node - "$W" > "$W/runtimes-update.json" <<'NODE'
const fs = require('fs');
const W = process.argv[2];
const dir = `${W}/crepo/tarport/releases`;
// every record under releases/ (however the name is laid out in folders), not the signatures
const recs = fs.readdirSync(dir, { recursive: true }).filter((f) => String(f).endsWith('.json')).map((f) => JSON.parse(fs.readFileSync(`${dir}/${f}`, 'utf8')));
recs.sort((a, b) => a.version - b.version);
const have = new Set(recs[0].layers.map((l) => l.diffId));
const newBytes = recs.at(-1).layers.filter((l) => !have.has(l.diffId)).reduce((n, l) => n + l.size, 0);
const out = JSON.parse(fs.readFileSync(`${W}/ctrupdate_1.out`, 'utf8'));
const added = fs.readFileSync(`${W}/ctr-content-added.txt`, 'utf8').trim().split('\n').filter(Boolean);
// a layer's blob in containerd is its stored object (compressed) or, uncompressed, its diff ID
const blobsOf = (layers) => layers.flatMap((l) => [l.diffId, l.digest]);
const v1Blobs = blobsOf(recs[0].layers);
const newBlobs = blobsOf(recs.at(-1).layers.filter((l) => !have.has(l.diffId)));
console.log(JSON.stringify({ bytesRead: out.transport.bytesRead, newCompressedBytes: newBytes, loaded: out.loaded.length, blobsAdded: added,
  v1LayersAddedAgain: added.filter((d) => v1Blobs.includes(d)), newLayersAdded: added.filter((d) => newBlobs.includes(d)) }));
NODE
ctr_empty
rm -rf "$W/crepo" "$W/cstate" "$W/pstate"
