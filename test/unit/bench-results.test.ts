// scripts/lib/bench-results.mjs: the history of bench runs, issue 16's ratios, the README table
// and the chart that scripts/bench writes.
import { describe, expect, it } from 'vitest';
import {
  README_END,
  README_START,
  appendRun,
  history,
  jobRatios,
  layerRatios,
  meets,
  pullLoadRatios,
  ratioText,
  readmeTable,
  replaceBetweenMarkers,
  runtimeRatios,
  svgChart,
  syncRatios,
  type Job,
  type Run,
} from '../../scripts/lib/bench-results.mjs';

const job = (c: string, contender: string, link: string, seconds: number, bytes: number | null = null): Job => ({
  case: c, contender, link, seconds, bytes, peakRssKiB: 100 * 1024, clientCpuSeconds: seconds / 2, cpuSeconds: seconds,
});

describe('history', () => {
  it('keeps every run: the single document of older benches becomes the first run', () => {
    const old = { date: '2026-11-24T19:17:49.790Z', archiveBytes: 5 };
    const h = appendRun(old, { date: 'new' });
    expect(h.runs).toEqual([{ ...old, storageDriver: 'not recorded', migrated: true }, { date: 'new' }]);
    expect(appendRun(h, { date: 'newer' }).runs.map((r) => (r as { date: string }).date)).toEqual([old.date, 'new', 'newer']);
    expect(history(undefined)).toEqual({ runs: [] });
  });

  it('refuses what is neither a history nor a run', () => {
    expect(() => history([1, 2])).toThrow('neither a history');
    expect(() => history({ runs: 3 })).toThrow('"runs" is not an array');
  });
});

describe('jobRatios', () => {
  const jobs = [
    job('fresh', 'tarport', 'loopback', 8), job('fresh', 'pipeline', 'loopback', 4), job('fresh', 'book', 'loopback', 10),
    job('update', 'tarport', '100mbit', 1, 9e6), job('update', 'book', '100mbit', 100, 2.2e9),
    job('many', 'tarport', 'loopback', 3), job('few', 'tarport', 'loopback', 2),
  ];
  const ratios = jobRatios(jobs);
  const byName = (n: string) => ratios.find((r) => r.name === n);

  it('divides tarport by each contender with issue 16 targets', () => {
    expect(byName('fresh, loopback: tarport / pipeline')).toMatchObject({ value: 2, target: 1 });
    expect(meets(byName('fresh, loopback: tarport / pipeline')!)).toBe(false);
    expect(byName('fresh, loopback: tarport / book')).toMatchObject({ value: 0.8, target: 1 });
    expect(meets(byName('fresh, loopback: tarport / book')!)).toBe(true);
    expect(byName('update, 100 Mbit/s: tarport / book')).toMatchObject({ value: 0.01, target: 0.05 });
  });

  it('compares the 40-layer image with 4 layers and bounds the peak RSS', () => {
    expect(byName('40 layers / 4 layers, loopback')).toMatchObject({ value: 1.5, target: 1.2 });
    expect(byName('tarport peak RSS / 256 MiB (every job)')?.value).toBeCloseTo(100 / 256);
  });

  it('leaves out what was not measured', () => {
    expect(byName('fresh, 1 Gbit/s: tarport / book')).toBeUndefined();
    expect(ratios).toHaveLength(5);
  });

  it("gives Docker's own share as floors without targets, each from its own rows", () => {
    const floors = jobRatios([
      ...jobs,
      job('update', 'book', 'loopback', 20), job('update', 'save', 'loopback', 8),
      job('fresh', 'docker', 'loopback', 5), job('many', 'docker', 'loopback', 12), job('few', 'docker', 'loopback', 3),
    ]);
    const floor = (n: string) => floors.find((r) => r.name === n);
    expect(floor('floor: update, docker save alone / book, loopback')).toMatchObject({ value: 0.4, target: null, detail: '8.00 s vs 20.00 s' });
    expect(floor('floor: fresh, docker save + load alone / pipeline, loopback')).toMatchObject({ value: 1.25, target: null });
    expect(floor('floor: 40 layers / 4 layers, docker save + load alone')).toMatchObject({ value: 4, target: null });
    expect(floor('fresh, loopback: tarport / docker save + load alone')).toMatchObject({ value: 1.6, target: null });
    // without the rows there is no floor (the jobs above have none of save's or docker's)
    expect(ratios.filter((r) => r.name.startsWith('floor'))).toEqual([]);
  });
});

describe('pullLoadRatios', () => {
  it('gives the pull against docker load -i (target 1.1), and the zstd pipe as the floor under it', () => {
    const ratios = pullLoadRatios({ seconds: 12, baselineSeconds: 10, zstdPipeSeconds: 11 });
    expect(ratios.map((r) => [r.name, r.value, r.target, meets(r)])).toEqual([
      ['pull and load / docker load -i', 1.2, 1.1, false],
      ['floor: pull and load, zstd -d piped into docker load / docker load -i', 1.1, null, true],
      ['pull and load / (zstd -d piped into docker load)', 12 / 11, null, true],
    ]);
    expect(ratios[1]!.detail).toBe('11.00 s vs 10.00 s');
  });

  it('leaves the floor out of a run that did not measure it', () => {
    expect(pullLoadRatios({ seconds: 10.5, baselineSeconds: 10 }).map((r) => [r.name, r.value, meets(r)])).toEqual([['pull and load / docker load -i', 1.05, true]]);
  });
});

describe('runtimeRatios', () => {
  it('gives containerd and Podman against their own loads, and the update bytes against the new layer + 64 KiB', () => {
    const ratios = runtimeRatios({
      containerd: { seconds: 12, baselineSeconds: 10 },
      podman: { seconds: 20, baselineSeconds: 10 },
      containerdUpdate: { bytesRead: 2 * 65536, newCompressedBytes: 65536 },
    });
    expect(ratios.map((r) => [r.name, r.value, r.target, meets(r)])).toEqual([
      ['pull and load into containerd / ctr images import', 1.2, 1.25, true],
      ['pull and load into Podman / podman load -i', 2, 1.25, false],
      ['update into containerd: bytes read / (new layer compressed + 64 KiB)', 1, 1.05, true],
    ]);
    expect(ratios[0]!.detail).toBe('12.00 s vs 10.00 s (ctr images import)');
  });

  it('leaves out what the run did not measure', () => {
    expect(runtimeRatios({ podman: { seconds: 1, baselineSeconds: 1 } }).map((r) => r.name)).toEqual(['pull and load into Podman / podman load -i']);
    expect(runtimeRatios({})).toEqual([]);
  });
});

describe('syncRatios', () => {
  it('divides cp -r + sha256sum -c by sync (higher is better, target 0.8) and shows the limit beside it', () => {
    const ratios = syncRatios({ seconds: 5, cpSha256sumSeconds: 4.5, limitSeconds: 1 });
    expect(ratios.map((r) => [r.name, r.value, r.target, meets(r)])).toEqual([
      ['sync dir → dir: (cp -r + sha256sum -c) / sync', 0.9, 0.8, true],
      ['sync dir → dir: physical limit / sync', 0.2, null, true],
    ]);
    expect(meets(syncRatios({ seconds: 5, cpSha256sumSeconds: 3.5, limitSeconds: 1 })[0]!)).toBe(false);
    expect(ratios[0]!.detail).toBe('5.00 s vs 4.50 s; limit 1.00 s');
  });
});

describe('layerRatios', () => {
  it('divides 40 layers by 4 for push, pull and load, and both (lower is better, target 1.2)', () => {
    const ratios = layerRatios({ push: { many: 3, few: 2 }, pull: { many: 11, few: 10 } });
    expect(ratios.map((r) => [r.name, r.value, r.target, meets(r)])).toEqual([
      ['40 layers / 4 layers, push (SFTP, loopback)', 1.5, 1.2, false],
      ['40 layers / 4 layers, pull and load (SFTP, loopback)', 1.1, 1.2, true],
      ['40 layers / 4 layers, push + pull and load (SFTP, loopback)', 14 / 12, 1.2, true],
    ]);
    expect(ratios[2]!.detail).toBe('14.00 s vs 12.00 s');
  });
});

describe('ratioText', () => {
  const r = (value: number, target: number | null) => ({ name: 'x', value, target, better: 'lower' as const, detail: '' });
  it('shows two decimals, and three where two would read as the target', () => {
    expect(ratioText(r(0.0542, 0.05))).toBe('0.054');
    expect(ratioText(r(0.0498, 0.05))).toBe('0.050');
    expect(ratioText(r(0.05, 0.05))).toBe('0.05');
    expect(ratioText(r(0.0542, null))).toBe('0.05');
    expect(ratioText(r(1.551, 1))).toBe('1.55');
  });
});

describe('README table and chart', () => {
  const run: Run = {
    date: '2026-12-01T15:00:00.000Z', storageDriver: 'overlay2', archiveBytes: 1.2e9,
    jobs: [job('fresh', 'tarport', 'loopback', 8, 4e8), job('fresh', 'book', 'loopback', 10)],
    ratios: [{ name: 'fresh, loopback: tarport / book', value: 0.8, target: 1, better: 'lower', detail: '8 s vs 10 s' }],
  };

  it('writes a line per job and link, and the ratios with their verdict', () => {
    const t = readmeTable(run);
    expect(t).toContain('storage driver overlay2');
    expect(t).toContain('| job | link | tarport | pipeline | book | skopeo | docker save alone | docker save + load alone |');
    expect(t).toContain('| fresh | loopback | 8.00 s · 400 MB · 8.0 s · 100 MiB | — | 10.00 s · – · 10.0 s · 100 MiB | — | — | — |');
    expect(t).toContain('| fresh, loopback: tarport / book (8 s vs 10 s) | 0.80 | ≤ 1 | met |');
    expect(t).not.toContain('Failed');
    expect(readmeTable({ ...run, note: 'stopped at the deadline' })).toContain('\n\nstopped at the deadline\n');
    expect(readmeTable({ ...run, failedJobs: [{ case: 'fresh', contender: 'skopeo', link: '100mbit', error: 'x\nwriting blob: closed pipe' }] })).toContain('**Failed:** fresh, skopeo, 100 Mbit/s: writing blob: closed pipe');
  });

  it('replaces only what lies between the markers, and refuses a README without them', () => {
    const text = `intro\n${README_START}\nold\n${README_END}\nafter\n`;
    expect(replaceBetweenMarkers(text, 'new')).toBe(`intro\n${README_START}\nnew\n${README_END}\nafter\n`);
    expect(() => replaceBetweenMarkers('no markers', 'new')).toThrow('markers');
  });

  it('draws a bar per ratio, coloured by its target, with earlier runs as dots', () => {
    const earlier = { date: '2026-11-30T10:00:00.000Z', ratios: [{ ...run.ratios[0]!, value: 1.5 }] };
    const svg = svgChart({ runs: [earlier, run] });
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.match(/<rect /g)).toHaveLength(1);
    expect(svg).toContain('fill="#2a8a3e"');
    expect(svg.match(/<circle /g)).toHaveLength(1);
    expect(() => svgChart({ runs: [{ date: 'x' }] })).toThrow('no run with ratios');
  });

  it('draws the bars of the latest whole run; a later run of one part (BENCH_ONLY) only as dots', () => {
    const part = { date: '2026-12-02T10:00:00.000Z', only: 'runtimes', ratios: [{ ...run.ratios[0]!, value: 5 }] };
    const svg = svgChart({ runs: [run, part] });
    expect(svg).toContain('ratios of the run of 2026-12-01 15:00 UTC');
    expect(svg).toContain('>0.80</text>');
    expect(svg.match(/<circle /g)).toHaveLength(1);
    expect(() => svgChart({ runs: [part] })).toThrow('no run with ratios');
  });
});
