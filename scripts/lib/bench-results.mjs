// What scripts/bench records and draws, as plain functions (no I/O): the history of runs in
// bench/results.json, the ratios of one run against issue 16's targets, the README's table and the
// SVG chart of the ratios. Shared by bench-report.mjs and bench-chart.mjs; tested in
// test/unit/bench-results.test.ts.

/**
 * The history as { runs: [...] }, whatever was there: nothing (a first run), the single document
 * scripts/bench wrote before it kept every run (becomes the first run), or the history itself.
 * @param {unknown} doc @returns {{ runs: object[] }}
 */
export function history(doc) {
  if (doc === undefined || doc === null) return { runs: [] };
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new Error('bench results: neither a history ({ runs: [...] }) nor one run');
  if ('runs' in doc) {
    if (!Array.isArray(doc.runs)) throw new Error('bench results: "runs" is not an array');
    return { runs: doc.runs };
  }
  return { runs: [{ ...doc, storageDriver: doc.storageDriver ?? 'not recorded', migrated: true }] };
}

/** @param {unknown} doc @param {object} run @returns {{ runs: object[] }} the history with run last */
export function appendRun(doc, run) {
  const h = history(doc);
  return { runs: [...h.runs, run] };
}

/** @typedef {{ case: string, contender: string, link: string, seconds: number, bytes: number | null, peakRssKiB: number, clientCpuSeconds: number, cpuSeconds: number }} Job */
/** @typedef {{ name: string, value: number, target: number | null, better: 'lower' | 'higher', detail: string }} Ratio */

/** @param {Job[]} jobs @returns {(c: string, who: string, link: string) => Job | undefined} */
export function jobFinder(jobs) {
  return (c, who, link) => jobs.find((j) => j.case === c && j.contender === who && j.link === link);
}

/** Whether a ratio meets its target (true when it has none). @param {Ratio} r */
/**
 * A ratio as the table shows it: two decimals, three where two would read as its target (0.054
 * against <= 0.05 is not met, and "0.05" would say it is).
 */
export function ratioText(r) {
  const two = r.value.toFixed(2);
  return r.target !== null && r.value !== r.target && two === r.target.toFixed(2) ? r.value.toFixed(3) : two;
}

export function meets(r) {
  if (r.target === null) return true;
  return r.better === 'lower' ? r.value <= r.target : r.value >= r.target;
}

const LINKS = ['loopback', '1gbit', '100mbit'];
const LINK_NAME = { loopback: 'loopback', '1gbit': '1 Gbit/s', '100mbit': '100 Mbit/s' };
const TARGETS = {
  fresh: { pipeline: { loopback: 1.0 }, book: { loopback: 1.0, '100mbit': 0.6 } },
  update: { book: { loopback: 0.25, '100mbit': 0.05 } },
};

/**
 * Issue 16's ratios that one run's jobs give: tarport against each contender per case and link
 * (lower is better), the 40-layer image against 4 layers, and the peak RSS of tarport's rows.
 * @param {Job[]} jobs @returns {Ratio[]}
 */
export function jobRatios(jobs) {
  const find = jobFinder(jobs);
  /** @type {Ratio[]} */
  const out = [];
  for (const link of LINKS) {
    for (const c of ['fresh', 'update']) {
      const tp = find(c, 'tarport', link);
      if (!tp) continue;
      for (const who of ['pipeline', 'book']) {
        const other = find(c, who, link);
        if (!other) continue;
        const target = TARGETS[c]?.[who]?.[link] ?? null;
        out.push({ name: `${c}, ${LINK_NAME[link]}: tarport / ${who}`, value: tp.seconds / other.seconds, target, better: 'lower', detail: `${tp.seconds.toFixed(2)} s vs ${other.seconds.toFixed(2)} s` });
      }
    }
    const many = find('many', 'tarport', link);
    const few = find('few', 'tarport', link);
    if (many && few) out.push({ name: `40 layers / 4 layers, ${LINK_NAME[link]}`, value: many.seconds / few.seconds, target: 1.2, better: 'lower', detail: `${many.seconds.toFixed(2)} s vs ${few.seconds.toFixed(2)} s` });
  }
  out.push(...floorRatios(find));
  const tpRows = jobs.filter((j) => j.contender === 'tarport');
  if (tpRows.length) {
    const peak = Math.max(...tpRows.map((j) => j.peakRssKiB)) / 1024;
    out.push({ name: 'tarport peak RSS / 256 MiB (every job)', value: peak / 256, target: 1, better: 'lower', detail: `${peak.toFixed(0)} MiB` });
  }
  return out;
}

/**
 * Docker's own share of the jobs, the floor under issue 16's targets (no target of their own):
 * `docker save` alone against the book's update (every contender saves the whole image, an update
 * too), save and load with no transfer against the pipeline (which overlaps the two in one stream,
 * where a repository in between runs them one after the other), the 40-layer image against 4 layers
 * for save and load alone, and what tarport's job adds to save and load.
 * @param {(c: string, who: string, link: string) => Job | undefined} find @returns {Ratio[]}
 */
function floorRatios(find) {
  /** @type {Ratio[]} */
  const out = [];
  const bound = (name, a, b) => {
    if (a && b) out.push({ name, value: a.seconds / b.seconds, target: null, better: 'lower', detail: `${a.seconds.toFixed(2)} s vs ${b.seconds.toFixed(2)} s` });
  };
  bound('floor: update, docker save alone / book, loopback', find('update', 'save', 'loopback'), find('update', 'book', 'loopback'));
  bound('floor: fresh, docker save + load alone / pipeline, loopback', find('fresh', 'docker', 'loopback'), find('fresh', 'pipeline', 'loopback'));
  bound('floor: 40 layers / 4 layers, docker save + load alone', find('many', 'docker', 'loopback'), find('few', 'docker', 'loopback'));
  bound('fresh, loopback: tarport / docker save + load alone', find('fresh', 'tarport', 'loopback'), find('fresh', 'docker', 'loopback'));
  return out;
}

/**
 * Issue 14's ratios of the runtimes rows (bench-runtimes.sh): tarport's pull into containerd and
 * into Podman against ctr images import / podman load -i of the same archive (medians), and the
 * bytes an update into containerd read against the new layers' compressed bytes + 64 KiB.
 * @param {{ containerd?: { seconds: number, baselineSeconds: number }, podman?: { seconds: number, baselineSeconds: number }, containerdUpdate?: { bytesRead: number, newCompressedBytes: number } }} rt
 * @returns {Ratio[]}
 */
export function runtimeRatios(rt) {
  /** @type {Ratio[]} */
  const out = [];
  const time = (name, r, base) => {
    if (r) out.push({ name, value: r.seconds / r.baselineSeconds, target: 1.25, better: 'lower', detail: `${r.seconds.toFixed(2)} s vs ${r.baselineSeconds.toFixed(2)} s (${base})` });
  };
  time('pull and load into containerd / ctr images import', rt.containerd, 'ctr images import');
  time('pull and load into Podman / podman load -i', rt.podman, 'podman load -i');
  const u = rt.containerdUpdate;
  if (u) out.push({ name: 'update into containerd: bytes read / (new layer compressed + 64 KiB)', value: u.bytesRead / (u.newCompressedBytes + 65536), target: 1.05, better: 'lower', detail: `${u.bytesRead} B vs ${u.newCompressedBytes} B` });
  return out;
}

/**
 * tarport's pull and load against `docker load -i` of the archive (target 1.1), and, where the run
 * measured it (runs since 2026-12-03), the floor under that target: the same load fed by `zstd -d`,
 * what decompressing alone costs on the daemon's cores, and tarport against that pipe.
 * @param {{ seconds: number, baselineSeconds: number, zstdPipeSeconds?: number }} p
 * @returns {Ratio[]}
 */
export function pullLoadRatios(p) {
  const s = (x) => `${x.toFixed(2)} s`;
  /** @type {Ratio[]} */
  const out = [{ name: 'pull and load / docker load -i', value: p.seconds / p.baselineSeconds, target: 1.1, better: 'lower', detail: `${s(p.seconds)} vs ${s(p.baselineSeconds)}` }];
  const z = p.zstdPipeSeconds;
  if (z === undefined) return out;
  out.push({ name: 'floor: pull and load, zstd -d piped into docker load / docker load -i', value: z / p.baselineSeconds, target: null, better: 'lower', detail: `${s(z)} vs ${s(p.baselineSeconds)}` });
  out.push({ name: 'pull and load / (zstd -d piped into docker load)', value: p.seconds / z, target: null, better: 'lower', detail: `${s(p.seconds)} vs ${s(z)}` });
  return out;
}

/**
 * sync dir → dir against cp -r + sha256sum -c of every object (the same work), and against the
 * physical limit measured in the run (no target: shown beside it).
 * @param {{ seconds: number, cpSha256sumSeconds: number, limitSeconds: number }} sync
 * @returns {Ratio[]}
 */
export function syncRatios(sync) {
  return [
    { name: 'sync dir → dir: (cp -r + sha256sum -c) / sync', value: sync.cpSha256sumSeconds / sync.seconds, target: 0.8, better: 'higher', detail: `${sync.seconds.toFixed(2)} s vs ${sync.cpSha256sumSeconds.toFixed(2)} s; limit ${sync.limitSeconds.toFixed(2)} s` },
    { name: 'sync dir → dir: physical limit / sync', value: sync.limitSeconds / sync.seconds, target: null, better: 'higher', detail: 'max(bytes ÷ disk, bytes ÷ (cores × SHA-256))' },
  ];
}

/**
 * BENCH_ONLY=layers: the 40-layer image against the same bytes in 4 layers, push and pull apart and
 * together (median seconds), each with issue 16's bound of 1.2.
 * @param {{ push: { many: number, few: number }, pull: { many: number, few: number } }} l
 * @returns {Ratio[]}
 */
export function layerRatios(l) {
  /** @type {[string, number, number][]} */
  const parts = [
    ['push', l.push.many, l.push.few],
    ['pull and load', l.pull.many, l.pull.few],
    ['push + pull and load', l.push.many + l.pull.many, l.push.few + l.pull.few],
  ];
  return parts.map(([what, many, few]) => ({ name: `40 layers / 4 layers, ${what} (SFTP, loopback)`, value: many / few, target: 1.2, better: 'lower', detail: `${many.toFixed(2)} s vs ${few.toFixed(2)} s` }));
}

const fmtBytes = (b) => (b === null || b === undefined ? '–' : b >= 1e9 ? `${(b / 1e9).toFixed(2)} GB` : `${(b / 1e6).toFixed(b >= 1e7 ? 0 : 1)} MB`);

/**
 * The README's table of one run: a line per case and link, a cell per contender (seconds, bytes
 * over the link, CPU seconds, peak RSS), then the ratios with their targets.
 * @param {{ date: string, storageDriver: string, archiveBytes: number, jobs: Job[], ratios: Ratio[], quick?: boolean, note?: string, failedJobs?: { case: string, contender: string, link: string, error: string }[] }} run
 * @returns {string} Markdown
 */
export function readmeTable(run) {
  const find = jobFinder(run.jobs);
  const who = ['tarport', 'pipeline', 'book', 'skopeo', 'save', 'docker'];
  const header = { save: 'docker save alone', docker: 'docker save + load alone' };
  const lines = [
    `Run of ${run.date.slice(0, 16).replace('T', ' ')} UTC${run.quick ? ' (quick mode)' : ''}, storage driver ${run.storageDriver}, fresh image ${fmtBytes(run.archiveBytes)}. A cell: wall time · bytes over the link · CPU seconds · peak RSS.`,
    ...(run.note ? ['', run.note] : []),
    '',
    `| job | link | ${who.map((w) => header[w] ?? w).join(' | ')} |`,
    `|---|---|${who.map(() => '---|').join('')}`,
  ];
  for (const c of ['fresh', 'update', 'many', 'few']) {
    for (const link of LINKS) {
      const cells = who.map((w) => {
        const j = find(c, w, link);
        return j ? `${j.seconds.toFixed(2)} s · ${fmtBytes(j.bytes)} · ${j.cpuSeconds.toFixed(1)} s · ${(j.peakRssKiB / 1024).toFixed(0)} MiB` : '—';
      });
      if (cells.every((x) => x === '—')) continue;
      lines.push(`| ${c} | ${LINK_NAME[link]} | ${cells.join(' | ')} |`);
    }
  }
  for (const f of run.failedJobs ?? []) lines.push('', `**Failed:** ${f.case}, ${f.contender}, ${LINK_NAME[f.link] ?? f.link}: ${String(f.error).split('\n').at(-1)}`);
  lines.push('', '| ratio | value | target | |', '|---|---|---|---|');
  for (const r of run.ratios) {
    const target = r.target === null ? '—' : `${r.better === 'lower' ? '≤' : '≥'} ${r.target}`;
    lines.push(`| ${r.name} (${r.detail}) | ${ratioText(r)} | ${target} | ${r.target === null ? '' : meets(r) ? 'met' : '**not met**'} |`);
  }
  return lines.join('\n');
}

export const README_START = '<!-- bench:start (scripts/bench-chart.mjs writes what is between these lines) -->';
export const README_END = '<!-- bench:end -->';

/** text with what lies between the markers replaced by table (refused when a marker is missing). */
export function replaceBetweenMarkers(text, table) {
  const a = text.indexOf(README_START);
  const b = text.indexOf(README_END);
  if (a < 0 || b < a) throw new Error(`README: the markers ${README_START} … ${README_END} are missing`);
  return `${text.slice(0, a + README_START.length)}\n${table}\n${text.slice(b)}`;
}

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/**
 * A bar per ratio of the latest run on a log scale (0.01 … 10; 1 = parity), the target as a tick,
 * green where met, red where not, grey without a target; earlier runs' values of the same ratio as
 * small dots, so that the chart shows the trend.
 * @param {{ runs: { date: string, ratios?: Ratio[], only?: string }[] }} hist @returns {string} SVG
 */
export function svgChart(hist) {
  // a run of one part (BENCH_ONLY) is drawn as dots only: the bars are the latest whole run's
  const withRatios = hist.runs.filter((r) => Array.isArray(r.ratios) && r.ratios.length);
  const whole = withRatios.filter((r) => !r.only);
  const last = whole.at(-1);
  if (!last) throw new Error('bench results: no run with ratios to draw');
  const [left, width, rowH, top] = [330, 420, 22, 40];
  const lo = Math.log10(0.01);
  const hi = Math.log10(10);
  const x = (v) => left + ((Math.log10(Math.min(10, Math.max(0.01, v))) - lo) / (hi - lo)) * width;
  const h = top + last.ratios.length * rowH + 30;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${left + width + 70}" height="${h}" font-family="sans-serif" font-size="12">`,
    `<text x="10" y="18" font-size="14" font-weight="bold">tarport: ratios of the run of ${esc(last.date.slice(0, 16).replace('T', ' '))} UTC (log scale; tick = target)</text>`,
  ];
  for (const v of [0.01, 0.1, 1, 10]) {
    parts.push(`<line x1="${x(v)}" y1="${top - 6}" x2="${x(v)}" y2="${h - 24}" stroke="${v === 1 ? '#555' : '#ddd'}"/>`, `<text x="${x(v)}" y="${h - 10}" text-anchor="middle">${v}</text>`);
  }
  last.ratios.forEach((r, i) => {
    const y = top + i * rowH;
    const colour = r.target === null ? '#999' : meets(r) ? '#2a8a3e' : '#c0392b';
    parts.push(`<text x="${left - 8}" y="${y + 14}" text-anchor="end">${esc(r.name)}</text>`);
    parts.push(`<rect x="${x(0.01)}" y="${y + 4}" width="${Math.max(1, x(r.value) - x(0.01)).toFixed(1)}" height="${rowH - 8}" fill="${colour}"/>`);
    parts.push(`<text x="${(x(r.value) + 4).toFixed(1)}" y="${y + 14}">${ratioText(r)}</text>`);
    if (r.target !== null) parts.push(`<line x1="${x(r.target)}" y1="${y + 1}" x2="${x(r.target)}" y2="${y + rowH - 1}" stroke="#000" stroke-width="2"/>`);
    for (const earlier of withRatios.filter((e) => e !== last)) {
      const e = earlier.ratios.find((q) => q.name === r.name);
      if (e) parts.push(`<circle cx="${x(e.value).toFixed(1)}" cy="${y + rowH / 2}" r="2.5" fill="#333" fill-opacity="0.5"/>`);
    }
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
