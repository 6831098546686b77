/**
 * A one-line progress bar on stderr, for the long commands (check, compact,
 * blob transfers, demo): bytes done of the total, rate, and time left.
 *
 * Drawn only when stderr is a terminal; piped or redirected, it prints
 * nothing at all (scripts get quiet stderr and clean stdout). It redraws at
 * most every PROGRESS_REDRAW_MS, so a caller may report after every chunk.
 *
 *   check  [##########··········]  52.4 MiB / 100 MiB   210 MiB/s  ETA 0s
 */
import type { CliIo } from "./io.ts";

/** Fewest milliseconds between two redraws: fast enough to look alive, slow enough to cost nothing. */
export const PROGRESS_REDRAW_MS = 100;
/** Cells of the bar itself; the rest of the line is label and figures. */
export const PROGRESS_BAR_CELLS = 24;

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/**
 * Formats a byte count with a binary unit.
 *
 * @example
 * formatBytes(1536) // "1.5 KiB"
 */
export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${UNITS[u]}`;
}

/**
 * Formats seconds as "42s", "3m05s" or "2h10m".
 *
 * @example
 * formatDuration(185) // "3m05s"
 */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/**
 * A progress bar. `update(done, total?)` after each step; `done()` clears
 * the line. Every method is a no-op when stderr is not a terminal.
 *
 * @example
 * const bar = new ProgressBar(io, "blob put", size);
 * for await (const chunk of source) bar.update(sent += chunk.length);
 * bar.done();
 */
export class ProgressBar {
  private readonly enabled: boolean;
  private readonly started = Date.now();
  private lastDraw = 0;
  private drawn = false;
  private doneBytes = 0;

  constructor(private readonly io: CliIo, private readonly label: string, private total?: number) {
    this.enabled = io.stderrIsTTY;
  }

  /** Reports `done` bytes of `total` (the total may become known late, or change). */
  update(done: number, total?: number): void {
    this.doneBytes = done;
    if (total !== undefined) this.total = total;
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.lastDraw < PROGRESS_REDRAW_MS) return;
    this.lastDraw = now;
    this.draw(now);
  }

  /**
   * For work measured in steps, not bytes (bench): shows `text` and the time
   * since the bar was made. Steps are seconds apart, so every one is drawn.
   */
  status(text: string): void {
    if (!this.enabled) return;
    const now = Date.now();
    this.lastDraw = now;
    const line = `${this.label}  ${formatDuration((now - this.started) / 1000)}  ${text}`.slice(0, Math.max(20, this.io.columns - 1));
    this.io.error(`\r\x1b[2K${line}`);
    this.drawn = true;
  }

  /** Prints a line that stays (a failure) above the bar, which is redrawn on the next update. */
  log(line: string): void {
    if (this.drawn) this.io.error("\r\x1b[2K");
    this.drawn = false;
    this.lastDraw = 0;
    this.io.error(line.endsWith("\n") ? line : line + "\n");
  }

  /** Clears the line; the caller prints its own summary. */
  done(): void {
    if (!this.enabled || !this.drawn) return;
    this.io.error("\r\x1b[2K");
    this.drawn = false;
  }

  private draw(now: number): void {
    const seconds = (now - this.started) / 1000;
    const rate = seconds > 0 ? this.doneBytes / seconds : 0;
    const parts: string[] = [this.label];
    const total = this.total;
    if (total !== undefined && total > 0) {
      const share = Math.min(1, this.doneBytes / total);
      const filled = Math.round(share * PROGRESS_BAR_CELLS);
      parts.push(`[${"#".repeat(filled)}${"·".repeat(PROGRESS_BAR_CELLS - filled)}]`);
      parts.push(`${formatBytes(this.doneBytes)} / ${formatBytes(total)}`);
      parts.push(`${formatBytes(rate)}/s`);
      parts.push(rate > 0 ? `ETA ${formatDuration((total - this.doneBytes) / rate)}` : "ETA ?");
    } else {
      parts.push(formatBytes(this.doneBytes), `${formatBytes(rate)}/s`, formatDuration(seconds));
    }
    const line = parts.join("  ").slice(0, Math.max(20, this.io.columns - 1));
    this.io.error(`\r\x1b[2K${line}`);
    this.drawn = true;
  }
}
