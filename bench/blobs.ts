/**
 * W6, blobs (BENCH.md): a 1 GiB blob written from a generated stream (never
 * whole in memory) and read back, MB/s each way and the peak RSS of the
 * process, side by side in one run with:
 *
 *   segstore        `putBlob(id, readable)` + `commit()`, then `openBlob(id)`
 *                   read to its end by a BYOB reader with one 1 MiB buffer
 *                   (BLAKE3 verified, the default); `segstore-noverify` is
 *                   the same read with `{ verify: false }`.
 *   cacache         `put.stream(cache, key)` then `get.stream(cache, key)`
 *                   (npm's cache: sha512 integrity computed on write and
 *                   verified on read). cacache never fsyncs; the bench
 *                   fsyncs its content file after put.stream, inside the
 *                   timed write, so every store's write is durable.
 *   fs-stream       plain `node:fs` streams: `createWriteStream` + one fsync,
 *                   `createReadStream`: the physical limit through the
 *                   runtime's stream machinery (bench/limits.ts measures the
 *                   same with writeSync/readSync as `fs-limit`).
 *
 * The source is a ReadableStream of 1 MiB chunks cut from the harness's
 * value pool (the same bytes limits.ts writes), pulled one at a time: no
 * store can hold the whole blob. Reads follow the write, so they come from
 * the page cache (caches are not dropped on a shared machine).
 *
 * Sizes: 1 GiB (64 MiB with --quick). The case `W6/segstore-4g` repeats
 * segstore with 4 GiB (256 MiB with --quick), one run, to show that peak
 * RSS does not grow with the blob.
 *
 *   node dist/bench/blobs.js --list
 *   node dist/bench/blobs.js --case W6/segstore --phase run --dir .bench-data/x --quick
 */
import { closeSync, createReadStream, createWriteStream, fsyncSync, mkdirSync, openSync } from "node:fs";
import {
  benchLine, benchMain, diskUsageMb, keyAt, MB, nowMs, peakRssMb, valueAt,
  type BenchCase, type BenchLine, type CaseContext,
} from "./harness.ts";

/** W6's blob: 1 GiB, and 64 MiB with --quick. */
const BLOB_BYTES = 1024 * MB;
const BLOB_BYTES_QUICK = 64 * MB;
/** The 4 GiB case (256 MiB with --quick). */
const BIG_BLOB_BYTES = 4096 * MB;
const BIG_BLOB_BYTES_QUICK = 256 * MB;
/** Chunks of the generated source: what a socket or file reader would hand over. */
const SOURCE_CHUNK_BYTES = MB;

/**
 * The generated blob: `total` bytes in SOURCE_CHUNK_BYTES chunks, each a
 * view into the harness's value pool, made only when the consumer pulls.
 */
function generatedStream(total: number): ReadableStream<Uint8Array> {
  let k = 0;
  const chunks = Math.ceil(total / SOURCE_CHUNK_BYTES);
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (k === chunks) {
        controller.close();
        return;
      }
      const size = Math.min(SOURCE_CHUNK_BYTES, total - k * SOURCE_CHUNK_BYTES);
      controller.enqueue(valueAt(k, SOURCE_CHUNK_BYTES).subarray(0, size));
      k++;
    },
  }, { highWaterMark: 1 });
}

/** Reads a stream to its end; returns the byte count. */
async function drain(stream: AsyncIterable<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const chunk of stream) n += chunk.length;
  return n;
}

/**
 * Reads a byte stream to its end with a BYOB reader and one buffer of
 * SOURCE_CHUNK_BYTES, handed back and forth (what a server relaying a blob
 * to a socket does: no allocation per chunk); returns the byte count.
 */
async function drainByob(stream: ReadableStream<Uint8Array>): Promise<number> {
  const reader = stream.getReader({ mode: "byob" });
  let buf = new Uint8Array(SOURCE_CHUNK_BYTES);
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read(buf);
    if (done) break;
    n += value.length;
    buf = new Uint8Array(value.buffer);
  }
  return n;
}

function mbPerS(bytes: number, ms: number): number {
  return bytes / MB / (ms / 1000);
}

/** The two lines of one store: write and read. */
function lines(store: string, total: number, writeMs: number, readMs: number, diskMb: number, note: { write: string; read: string }): BenchLine[] {
  const common = { store, n: 1, value_bytes: total, peak_rss_mb: peakRssMb(), disk_mb: diskMb };
  return [
    benchLine({ ...common, workload: "W6-write", mb_per_s: mbPerS(total, writeMs), durable: true, note: note.write }),
    benchLine({ ...common, workload: "W6-read", mb_per_s: mbPerS(total, readMs), durable: null, note: note.read }),
  ];
}

/** segstore: putBlob from the generated stream + commit, then openBlob verified (and once more unverified). */
async function runSegstore(ctx: CaseContext, total: number, name: string, withNoVerify: boolean): Promise<BenchLine[]> {
  const { open } = await import("../mod.ts");
  const store = open(ctx.dir, { create: true });
  const id = keyAt(6);
  const writeStarted = nowMs();
  const info = await store.putBlob(id, generatedStream(total));
  store.commit();
  const writeMs = nowMs() - writeStarted;
  if (info.length !== total) throw new Error(`W6 segstore: stored ${info.length} of ${total} B in ${ctx.dir}`);
  const diskMb = diskUsageMb(ctx.dir);

  const readStarted = nowMs();
  const read = await drainByob(store.openBlob(id)!);
  const readMs = nowMs() - readStarted;
  if (read !== total) throw new Error(`W6 segstore: read back ${read} of ${total} B from ${store.blobPath(id)}`);
  const out = lines(name, total, writeMs, readMs, diskMb, {
    write: "putBlob(id, ReadableStream of 1 MiB chunks) + commit(): BLAKE3 while writing, fdatasync, rename, directory syncs, COMMIT + fdatasync",
    read: "openBlob(id) read to the end by a BYOB reader with one 1 MiB buffer, BLAKE3 verified (the default); page cache",
  });
  if (withNoVerify) {
    const started = nowMs();
    const again = await drainByob(store.openBlob(id, { verify: false })!);
    const ms = nowMs() - started;
    if (again !== total) throw new Error(`W6 segstore: unverified read gave ${again} of ${total} B`);
    out.push(benchLine({
      workload: "W6-read", store: `${name}-noverify`, n: 1, value_bytes: total, mb_per_s: mbPerS(total, ms),
      peak_rss_mb: peakRssMb(), disk_mb: diskMb, note: "openBlob(id, { verify: false }), BYOB reader, one 1 MiB buffer: length checked, no hash; page cache",
    }));
  }
  store.close();
  return out;
}

/** cacache: put.stream with backpressure, fsync of its content file, then get.stream. */
async function runCacache(ctx: CaseContext, total: number): Promise<BenchLine[]> {
  // cacache ships no type declarations: import it by a name TypeScript does not resolve, and type what is used.
  const cacacheModule = "cacache";
  const cacache = (await import(cacacheModule)).default as {
    put: { stream(cache: string, key: string): NodeJS.WritableStream & { on(e: string, f: (...a: unknown[]) => void): unknown } };
    get: { stream(cache: string, key: string): AsyncIterable<Uint8Array>; info(cache: string, key: string): Promise<{ path: string } | null> };
  };
  mkdirSync(ctx.dir, { recursive: true });
  const key = "w6-blob";
  const writeStarted = nowMs();
  const sink = cacache.put.stream(ctx.dir, key);
  const done = new Promise<void>((resolve, reject) => {
    sink.on("error", reject);
    sink.on("finish", () => resolve());
  });
  const reader = generatedStream(total).getReader();
  for (;;) {
    const { done: end, value } = await reader.read();
    if (end) break;
    if (!sink.write(value)) await new Promise<void>((resolve) => sink.once("drain", () => resolve()));
  }
  sink.end();
  await done;
  const info = await cacache.get.info(ctx.dir, key);
  if (info === null) throw new Error(`W6 cacache: no entry for ${key} in ${ctx.dir} after put.stream`);
  const fd = openSync(info.path, "r");
  fsyncSync(fd);
  closeSync(fd);
  const writeMs = nowMs() - writeStarted;
  const diskMb = diskUsageMb(ctx.dir);

  const readStarted = nowMs();
  const read = await drain(cacache.get.stream(ctx.dir, key));
  const readMs = nowMs() - readStarted;
  if (read !== total) throw new Error(`W6 cacache: read back ${read} of ${total} B`);
  return lines("cacache", total, writeMs, readMs, diskMb, {
    write: "put.stream (sha512 while writing, rename into content-v2/) + an fsync of the content file added by the bench (cacache has none)",
    read: "get.stream to the end, sha512 verified (cacache's default); page cache",
  });
}

/** Plain node:fs streams + one fsync: the physical limit through stream machinery. */
async function runFsStream(ctx: CaseContext, total: number): Promise<BenchLine[]> {
  mkdirSync(ctx.dir, { recursive: true });
  const path = `${ctx.dir}/blob`;
  const writeStarted = nowMs();
  const fd = openSync(path, "w");
  const out = createWriteStream(path, { fd, autoClose: false, highWaterMark: SOURCE_CHUNK_BYTES });
  const reader = generatedStream(total).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (!out.write(value)) await new Promise<void>((resolve) => out.once("drain", () => resolve()));
  }
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
  fsyncSync(fd);
  closeSync(fd);
  const writeMs = nowMs() - writeStarted;
  const diskMb = diskUsageMb(ctx.dir);

  const readStarted = nowMs();
  const read = await drain(createReadStream(path, { highWaterMark: SOURCE_CHUNK_BYTES }));
  const readMs = nowMs() - readStarted;
  if (read !== total) throw new Error(`W6 fs-stream: read back ${read} of ${total} B from ${path}`);
  return lines("fs-stream", total, writeMs, readMs, diskMb, {
    write: "node:fs createWriteStream (1 MiB writes, backpressure) + one fsyncSync (included)",
    read: "node:fs createReadStream, 1 MiB chunks; page cache",
  });
}

const size = (ctx: CaseContext): number => (ctx.quick ? BLOB_BYTES_QUICK : BLOB_BYTES);

const BLOB_CASES: readonly BenchCase[] = [
  { workload: "W6", store: "segstore", run: (ctx) => runSegstore(ctx, size(ctx), "segstore", true) },
  { workload: "W6", store: "cacache", run: (ctx) => runCacache(ctx, size(ctx)) },
  { workload: "W6", store: "fs-stream", run: (ctx) => runFsStream(ctx, size(ctx)) },
  {
    workload: "W6", store: "segstore-4g", runs: 1,
    run: (ctx) => runSegstore(ctx, ctx.quick ? BIG_BLOB_BYTES_QUICK : BIG_BLOB_BYTES, "segstore-4g", false),
  },
];

await benchMain(BLOB_CASES);
