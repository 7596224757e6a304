import type { Output } from './output.js';
import { humanBytes } from './output.js';

/**
 * A line redrawn in place on a terminal while push or pull works: what is being moved, the bytes so
 * far, the speed and the time spent. Nothing of it when stderr is not a terminal (cron, journald,
 * files keep their lines), under --quiet, or with --json. `bytes` is read on every redraw (the
 * repository transport's counters), so the line moves while a large layer is still in flight.
 */
export interface Progress {
  /** Shows the line for this step (restarts the clock and the byte count). */
  begin(label: string): void;
  /** Extra words after the bytes, e.g. "3 layer(s) stored". */
  note(text: string): void;
  /** Takes the line away, so that a message can be printed below the last state. */
  end(): void;
}

const NONE: Progress = { begin: () => undefined, note: () => undefined, end: () => undefined };

export async function progressLine(out: Output, verb: string, bytes: () => number): Promise<Progress> {
  if (!process.stderr.isTTY || out.quiet || out.json) return NONE;
  const { SingleBar } = await import('cli-progress');
  let label = '';
  let note = '';
  let base = 0;
  let active = false;
  const bar = new SingleBar({
    stream: process.stderr,
    hideCursor: true,
    fps: 5,
    format: (_opts, p) => {
      const done = Math.max(0, bytes() - base);
      const secs = Math.max(0.001, (Date.now() - p.startTime) / 1000);
      return `${verb} ${label}: ${humanBytes(done)} ${verb === 'push' ? 'written' : 'fetched'}, ${humanBytes(done / secs)}/s, ${Math.floor(secs)} s${note ? `, ${note}` : ''}`;
    },
  });
  return {
    begin(l) {
      if (active) bar.stop();
      label = l;
      note = '';
      base = bytes();
      active = true;
      bar.start(1, 0);
    },
    note(text) {
      note = text;
    },
    end() {
      if (!active) return;
      active = false;
      bar.stop();
    },
  };
}
