// Types of bench-results.mjs (plain JavaScript, run by scripts/bench), for the type-checked tests.

/** One job of scripts/bench: a contender moving an image over a link. */
export interface Job {
  case: string;
  contender: string;
  link: string;
  seconds: number;
  /** bytes over the link; null on loopback until a shaped link's count is filled in */
  bytes: number | null;
  peakRssKiB: number;
  clientCpuSeconds: number;
  cpuSeconds: number;
}
/** A ratio of one run with issue 16's target (null: shown without one). */
export interface Ratio {
  name: string;
  value: number;
  target: number | null;
  better: 'lower' | 'higher';
  detail: string;
}
export interface Run {
  date: string;
  storageDriver: string;
  archiveBytes: number;
  jobs: Job[];
  ratios: Ratio[];
  quick?: boolean;
  /** what the reader should know about this run (BENCH_NOTE) */
  note?: string;
  /** jobs that failed, with the end of their error output */
  failedJobs?: { case: string; contender: string; link: string; error: string }[];
}
/** The history as { runs }, from nothing, the older single document, or a history. */
export declare function history(doc: unknown): { runs: object[] };
export declare function appendRun(doc: unknown, run: object): { runs: object[] };
export declare function jobFinder(jobs: Job[]): (c: string, who: string, link: string) => Job | undefined;
export declare function meets(r: Ratio): boolean;
/** Two decimals, three where two would read as the ratio's target. */
export declare function ratioText(r: Ratio): string;
export declare function jobRatios(jobs: Job[]): Ratio[];
export declare function readmeTable(run: Run): string;
export declare const README_START: string;
export declare const README_END: string;
export declare function replaceBetweenMarkers(text: string, table: string): string;
/** A pull into a runtime against the runtime's own load of the same archive (median seconds). */
export interface RuntimeTimes {
  seconds: number;
  baselineSeconds: number;
}
export declare function pullLoadRatios(p: { seconds: number; baselineSeconds: number; zstdPipeSeconds?: number }): Ratio[];
export declare function runtimeRatios(rt: { containerd?: RuntimeTimes; podman?: RuntimeTimes; containerdUpdate?: { bytesRead: number; newCompressedBytes: number } }): Ratio[];
/** sync dir → dir against cp -r + sha256sum -c (target 0.8, higher is better) and the physical limit. */
export declare function syncRatios(sync: { seconds: number; cpSha256sumSeconds: number; limitSeconds: number }): Ratio[];
/** The 40-layer image against 4 layers: push, pull and load, and both (target 1.2, lower is better). */
export declare function layerRatios(l: { push: { many: number; few: number }; pull: { many: number; few: number } }): Ratio[];
/** Bars of the latest run that is not of one part (`only`), earlier runs' values as dots. */
export declare function svgChart(hist: { runs: { date: string; ratios?: Ratio[]; only?: string }[] }): string;
