import { hostsHolding, readAcks, type Ack } from './acks.js';
import { describeRelease, type ReleaseSummary } from './describe.js';
import { PAGE_KEY, recordKey } from './layout.js';
import { keptFacts, readPageData, writePageData, type PageFacts } from './page-data.js';
import { listReleases, listTags, type ReleaseRef } from './read.js';
import type { ReleaseMember } from './platforms.js';
import type { Catalog, ReleaseRecord } from './records.js';
import type { Store } from './store.js';

/**
 * index.html (docs/repo-format.md, "The page"): what the repository holds, for a person. Written
 * through the write transaction after the catalog, from releases/ (every version, not only the
 * current ones) and tarport/acks/. Static: no script, no request of its own, inline CSS, so that
 * it reads the same from a web mirror, an FTP client and a file browser on a stick. Every string
 * that comes from the repository is HTML-escaped.
 */

export type PageRelease = Omit<ReleaseSummary, 'record' | 'members'> & {
  /** "os/architecture[/variant]" of each platform the release holds, as far as can be told without a key. */
  platforms: string[];
  layers: string[];
};

/** Every release of every tag (oldest version first), with signer, platforms and the hosts that hold it. */
export async function describeReleases(store: Store, catalog: Catalog | undefined, acks: readonly Ack[], signal?: AbortSignal): Promise<PageRelease[]> {
  return (await pageReleases(store, catalog, acks, signal)).releases;
}

/**
 * The page's releases, reading only the records the kept page data does not describe yet; `facts`
 * is the page data for what releases/ holds now, `changed` whether it differs from what was kept.
 */
async function pageReleases(store: Store, catalog: Catalog | undefined, acks: readonly Ack[], signal?: AbortSignal) {
  const current = new Set((catalog?.releases ?? []).map((e) => `${e.name}:${e.tag}:${e.record}`));
  const kept = await readPageData(store, signal);
  const facts = new Map<string, PageFacts>();
  const releases: PageRelease[] = [];
  let changed = false;
  const tags = (await listTags(store, signal)).sort((a, b) => (`${a.name}:${a.tag}` < `${b.name}:${b.tag}` ? -1 : 1));
  for (const { name, tag } of tags) {
    for (const ref of await listReleases(store, name, tag, signal)) {
      let f = keptFacts(kept, ref);
      if (!f) {
        changed = true;
        // a release gc removed since the listing, or a broken record (check names it): the page is
        // a derived view, and a publish whose catalog is written must not fail over it
        f = await factsOf(store, ref, signal).catch((e: unknown) => {
          if (signal?.aborted) throw e;
          return undefined;
        });
      }
      if (!f) continue;
      const key = recordKey(ref.name, ref.tag, ref.record);
      facts.set(key, f);
      releases.push({ ...f, current: current.has(`${ref.name}:${ref.tag}:${ref.record}`), hosts: hostsHolding(acks, ref.name, ref.tag, f.digest) });
    }
  }
  return { releases, facts, changed: changed || facts.size !== kept.size };
}

async function factsOf(store: Store, ref: ReleaseRef, signal?: AbortSignal): Promise<PageFacts> {
  const { record, members, current: _current, hosts: _hosts, ...summary } = await describeRelease(store, ref, new Set(), [], signal);
  return { ...summary, platforms: await platformsOf(store, record, members, signal), layers: record.layers.map((l) => l.digest) };
}

/**
 * What platforms a release holds: a multi-platform release's members (docs/repo-format.md,
 * "Multi-platform releases"), else the image config's os and architecture when it can be read
 * without a key; a rootfs runs where it is imported.
 */
async function platformsOf(store: Store, record: ReleaseRecord, members: readonly ReleaseMember[], signal?: AbortSignal): Promise<string[]> {
  if (members.length) return members.map(memberName);
  if (record.kind === 'rootfs') return ['any (rootfs: the importing host\'s)'];
  if (!record.config || record.config.encryption) return ['unknown (config encrypted)'];
  try {
    const bytes = await store.readSmall(`blobs/sha256/${record.config.digest.slice(7)}`, 1 << 20, 'image config', signal);
    return [platformName(JSON.parse(bytes.toString('utf8'))) ?? 'unknown'];
  } catch {
    return ['unknown (config unreadable)'];
  }
}

function memberName(m: ReleaseMember): string {
  if (m.state === 'image') return m.platform;
  if (m.state === 'absent') return `${m.platform} (listed without its blobs)`;
  return `${m.type ?? 'artifact'} (${m.platform}, never loaded)`;
}

function platformName(p: unknown): string | undefined {
  const o = p as { os?: unknown; architecture?: unknown; variant?: unknown } | null;
  if (!o || typeof o.os !== 'string' || typeof o.architecture !== 'string') return undefined;
  return [o.os, o.architecture, ...(typeof o.variant === 'string' ? [o.variant] : [])].join('/');
}

/**
 * Whether the page in place shows this catalog, or a later one of the same repository. The page is
 * the last derived file a write rewrites (docs/repo-format.md, "Write order"), so when it does,
 * index.json and the registry view do too; a writer that found the catalog current (nothing new)
 * rewrites them only when it does not: after a writer killed between its catalog and its page, the
 * next one catches up. A later catalog's page is left alone: a writer that read the catalog before
 * another's publish must not put its older view back.
 */
export async function pageShows(store: Store, catalog: Catalog, signal?: AbortSignal): Promise<boolean> {
  // unreadable, too large or missing: written again, as a write that changed the catalog would
  const page = await store.readOptional(PAGE_KEY, MAX_PAGE_BYTES, 'index.html', signal).catch(() => undefined);
  const mark = page && CATALOG_MARK.exec(page.toString('utf8'));
  return !!mark && mark[1] === esc(catalog.repository ?? '') && Number(mark[2]) >= catalog.sequence;
}

/** A page this large is written again rather than read (a page of thousands of releases is far smaller). */
const MAX_PAGE_BYTES = 32 << 20;

/** The page's note of the catalog it was written from (pageShows). */
function catalogMark(catalog: Catalog): string {
  return `<meta name="tarport-catalog" content="${esc(catalog.repository ?? '')} ${esc(catalog.sequence)} ${esc(catalog.created)}">`;
}
const CATALOG_MARK = /<meta name="tarport-catalog" content="([^" ]*) (\d+) [^"]*">/;

/** Rewrites index.html from the catalog, releases/ and tarport/acks/. */
export async function writePage(store: Store, catalog: Catalog, signal?: AbortSignal): Promise<void> {
  const { acks } = await readAcks(store, signal);
  const { releases, facts, changed } = await pageReleases(store, catalog, acks, signal);
  await store.putAtomic(PAGE_KEY, Buffer.from(renderPage({ catalog, releases, acks }), 'utf8'), signal);
  if (changed) await writePageData(store, facts, signal);
}

// ---- rendering ---------------------------------------------------------------------------------

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escapes text for HTML element content and quoted attribute values. */
export function esc(s: string | number): string {
  return String(s).replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

export function humanSize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

const STYLE = `body{font-family:system-ui,sans-serif;margin:2em auto;max-width:75em;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;font-size:.9em}th,td{text-align:left;padding:.3em .5em;border-bottom:1px solid #eee;vertical-align:top}
th{background:#f4f4f4}code{font-family:ui-monospace,monospace;font-size:.9em;word-break:break-all}
tr.current td{background:#eef8ee}.muted{color:#666}pre{background:#f4f4f4;padding:.5em;overflow-x:auto}`;

/** The page as a string (pure: what writePage writes). */
export function renderPage(model: { catalog: Catalog; releases: readonly PageRelease[]; acks: readonly Ack[] }): string {
  const { catalog, releases, acks } = model;
  const byTag = new Map<string, PageRelease[]>();
  for (const r of releases) byTag.set(`${r.name}:${r.tag}`, [...(byTag.get(`${r.name}:${r.tag}`) ?? []), r]);
  return [
    '<!DOCTYPE html>',
    '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">',
    // no request of its own: the page names no script, style sheet, image or font outside itself
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">`,
    catalogMark(catalog),
    `<title>tarport repository</title><style>${STYLE}</style></head><body>`,
    '<h1>tarport repository</h1>',
    `<p>Repository <code>${esc(catalog.repository ?? 'without id (tarport 0.1)')}</code>, catalog sequence ${esc(catalog.sequence)}, written ${esc(catalog.created)}, valid until ${esc(catalog.expires)}. ` +
      `${esc(byTag.size)} tag(s), ${esc(releases.length)} release(s), ${esc(acks.length)} host(s) acknowledged.</p>`,
    '<p class="muted">Pull with <code>tarport pull --from REPOSITORY NAME:TAG</code>, REPOSITORY being where you read this page (a path, ftp://, ftps://, sftp://, http:// or https://). Signers are as the signatures claim them: a consumer checks them against the keys it pins (<code>--trust</code>).</p>',
    ...[...byTag.values()].map(renderTag),
    renderHosts(acks),
    '</body></html>',
    '',
  ].join('\n');
}

function renderTag(versions: readonly PageRelease[]): string {
  const { name, tag } = versions[0]!;
  const ref = `${name}:${tag}`;
  const head = ['version', 'created', 'kind', 'platforms', 'size', 'layers', 'signer', 'encrypted', 'record', 'hosts'];
  // how many versions hold each layer, counted once: a set of the others' layers per version would
  // cost versions² × layers, which a repository of many versions (or one built to) makes minutes
  const holders = new Map<string, number>();
  for (const v of versions) for (const l of new Set(v.layers)) holders.set(l, (holders.get(l) ?? 0) + 1);
  const rows = versions.map((v) => {
    const shared = v.layers.filter((l) => holders.get(l)! > 1).length;
    const hosts = v.hosts.map((h) => `${esc(h.hostname)} <span class="muted">(${esc(h.host)}, ${esc(h.runtime)} ${esc(h.platform)}, ${esc(h.loaded)})</span>`).join('<br>') || '<span class="muted">none</span>';
    const cells = [
      `v${esc(v.version)}${v.current ? ' <strong>current</strong>' : ''}`,
      esc(v.created),
      esc(v.kind),
      esc(v.platforms.join(', ')),
      esc(humanSize(v.size)),
      `${esc(v.layers.length)}${shared ? ` (${esc(shared)} shared with other versions)` : ''}`,
      v.signer ? `${v.signerUserId ? `${esc(v.signerUserId)}<br>` : ''}<code>${esc(v.signer)}</code>` : 'not signed',
      v.encrypted ? 'yes' : 'no',
      `<code>${esc(v.digest)}</code>`,
      hosts,
    ];
    return `<tr${v.current ? ' class="current"' : ''}>${cells.map((c) => `<td>${c}</td>`).join('')}</tr>`;
  });
  return [
    `<h2 id="${esc(ref)}">${esc(ref)}</h2>`,
    `<pre>tarport pull --from REPOSITORY ${esc(ref)}</pre>`,
    `<table><thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr></thead><tbody>`,
    ...rows,
    '</tbody></table>',
  ].join('\n');
}

function renderHosts(acks: readonly Ack[]): string {
  if (acks.length === 0) return '<h2>Hosts</h2>\n<p class="muted">No host has left an acknowledgement (tarport/acks/).</p>';
  const rows = acks.map((a) => {
    const held = a.releases.map((r) => `${esc(r.name)}:${esc(r.tag)} v${esc(r.version)}`).join(', ');
    return `<tr><td>${esc(a.hostname)}</td><td><code>${esc(a.host)}</code></td><td>${esc(a.updated)}</td><td>${held}</td></tr>`;
  });
  return ['<h2>Hosts</h2>', '<table><thead><tr><th>host</th><th>id</th><th>updated</th><th>holds</th></tr></thead><tbody>', ...rows, '</tbody></table>'].join('\n');
}
