/**
 * Physical limits (store "fs-limit"): what the disk and the runtime's plain
 * `fs` give, measured in the same run and runtime as the stores, so each
 * store's figure can be read against the ceiling it sits under.
 *
 *   W4 / fs-limit        the raw rate of "append 100 B, fdatasync": the most
 *                        durable one-put commits per second any store could
 *                        reach on this disk (W4's companion).
 *   W6-write / fs-limit  1 GiB (64 MiB with --quick) written in 1 MiB chunks
 *                        with writeSync, then one fsync; MB/s including it.
 *   W6-read / fs-limit   the same file read back in 1 MiB chunks; MB/s. The
 *                        read follows the write, so it is served from the
 *                        page cache: caches are not dropped on a shared
 *                        machine (that needs root and slows everyone).
 *
 * Both use `node:fs` synchronous calls, which Deno implements too, so the
 * same code measures each runtime's own path to the kernel.
 */
import { closeSync, fdatasyncSync, fsyncSync, mkdirSync, openSync, readSync, writeSync } from "node:fs";
import {
  benchLine, benchMain, bytesEqual, diskUsageMb, MB, nowMs, peakRssMb, percentile, valueAt,
  type BenchCase, type BenchLine, type CaseContext,
} from "./harness.ts";

/** W4's commits, and the --quick count. */
const SYNC_COUNT = 2_000;
const SYNC_COUNT_QUICK = 200;
/** W4's record: one 100 B put. */
const SYNC_APPEND_BYTES = 100;
/** W6's size: 1 GiB, and 64 MiB with --quick. */
const STREAM_BYTES = 1024 * MB;
const STREAM_BYTES_QUICK = 64 * MB;
/** W6's chunk: 1 MiB per write and per read. */
const STREAM_CHUNK_BYTES = MB;

/** Writes all of `buf` at `position` (writeSync may write less than asked). */
function writeAll(fd: number, buf: Uint8Array, position: number): void {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done, position + done);
}

/** W4 / fs-limit: append 100 B and fdatasync, `n` times. */
async function runSyncRate(ctx: CaseContext): Promise<BenchLine> {
  const n = ctx.quick ? SYNC_COUNT_QUICK : SYNC_COUNT;
  mkdirSync(ctx.dir, { recursive: true });
  const fd = openSync(`${ctx.dir}/appends`, "w+");
  const record = valueAt(0, SYNC_APPEND_BYTES);
  const latencies = new Float64Array(n);
  const started = nowMs();
  for (let i = 0; i < n; i++) {
    const t = nowMs();
    writeAll(fd, record, i * SYNC_APPEND_BYTES);
    fdatasyncSync(fd);
    latencies[i] = nowMs() - t;
  }
  const elapsed = nowMs() - started;
  closeSync(fd);
  latencies.sort();
  return benchLine({
    workload: "W4", store: "fs-limit", n, value_bytes: SYNC_APPEND_BYTES,
    ops_per_s: n / (elapsed / 1000), peak_rss_mb: peakRssMb(), disk_mb: diskUsageMb(ctx.dir), durable: true,
    p50_ms: percentile(latencies, 50), p99_ms: percentile(latencies, 99),
    note: "node:fs writeSync of 100 B at the end of one file + fdatasyncSync, per commit",
  });
}

/** W6 / fs-limit: a large file written in chunks and fsync'ed, then read back. */
async function runStream(ctx: CaseContext): Promise<BenchLine[]> {
  const total = ctx.quick ? STREAM_BYTES_QUICK : STREAM_BYTES;
  const chunks = total / STREAM_CHUNK_BYTES;
  mkdirSync(ctx.dir, { recursive: true });
  const path = `${ctx.dir}/stream`;

  const out = openSync(path, "w");
  const writeStarted = nowMs();
  for (let k = 0; k < chunks; k++) writeAll(out, valueAt(k, STREAM_CHUNK_BYTES), k * STREAM_CHUNK_BYTES);
  fsyncSync(out);
  const writeElapsed = nowMs() - writeStarted;
  closeSync(out);
  const diskMb = diskUsageMb(ctx.dir);

  const input = openSync(path, "r");
  const buf = new Uint8Array(STREAM_CHUNK_BYTES);
  let read = 0;
  const readStarted = nowMs();
  for (;;) {
    const got = readSync(input, buf, 0, buf.length, read);
    if (got === 0) break;
    read += got;
  }
  const readElapsed = nowMs() - readStarted;
  // The read must have returned what was written (the last chunk is in buf).
  const lastChunk = valueAt(chunks - 1, STREAM_CHUNK_BYTES);
  closeSync(input);
  if (read !== total || !bytesEqual(buf, lastChunk)) throw new Error(`W6 fs-limit: read back ${read} of ${total} B from ${path}, or different bytes`);

  const peak = peakRssMb();
  const common = { store: "fs-limit", n: 1, value_bytes: total, peak_rss_mb: peak, disk_mb: diskMb };
  return [
    benchLine({
      ...common, workload: "W6-write", mb_per_s: total / MB / (writeElapsed / 1000), durable: true,
      note: "node:fs writeSync of 1 MiB chunks, then one fsyncSync (included)",
    }),
    benchLine({
      ...common, workload: "W6-read", mb_per_s: total / MB / (readElapsed / 1000), durable: null,
      note: "node:fs readSync of 1 MiB chunks right after the write: page cache (not dropped on a shared machine)",
    }),
  ];
}

const LIMIT_CASES: readonly BenchCase[] = [
  { workload: "W4", store: "fs-limit", run: runSyncRate },
  { workload: "W6", store: "fs-limit", run: runStream },
];

await benchMain(LIMIT_CASES);
