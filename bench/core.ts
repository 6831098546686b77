/**
 * The "core" workload (BENCH.md): the WebAssembly core measured against the
 * alternatives a JS engineer would reach for, in the same process, on the
 * same bytes and keys.
 *
 *   node dist/bench/core.js [--quick]        deno run -A bench/core.ts [--quick]
 *
 * Lines (one JSON object each, BENCH.md fields):
 * - core-crc, per store (wasm = WasmCore.crc32At in place, zlib = node:zlib
 *   crc32, hash-wasm = its createCRC32 hasher, js = slice-by-16 in plain
 *   JS): mb_per_s over a 64 MiB buffer already in wasm memory (the others
 *   read the same view), ops_per_s over 64-byte records, one call each
 *   (n records, value_bytes 64).
 * - core-blake3, per store (wasm-simd = our Blake3, src/blake3.ts;
 *   hash-wasm = its createBLAKE3, the portable build): mb_per_s hashing a
 *   64 MiB JS buffer in 1 MiB updates, as a blob write does (the copy into
 *   each hasher's wasm memory included).
 * - core-index-insert / core-index-lookup / core-index-lookup-batch, per
 *   store (wasm = KeyIndex; js-map = a Map from the key's hex string to an
 *   entry number, hex made the fastest way measured, a TextDecoder over a
 *   byte table), at n = 1,000,000 and 10,000,000 keys (--quick: 1M only).
 *   Inserts start from an empty index (growth included); lookups are of
 *   existing keys in random order and read the value's offset; the batch
 *   line calls lookupMany 4,096 keys at a time. bytes_per_key: the table's
 *   wasm memory (growth headroom included) per key; for js-map, the heap
 *   growth per key after a full GC plus the values array.
 * - core-index-checkpoint-write / core-index-checkpoint-load (wasm): the
 *   index written as a checkpoint (no datasync) and loaded into a fresh
 *   core, ms and mb_per_s; beside it, store fs-limit: the same file read
 *   into a fresh Uint8Array through the same adapter (the disk-speed
 *   reference: page cache, first touch of fresh memory, as the load pays).
 *
 * Every figure is the median of BENCH_RUNS runs (default 3) after one
 * untimed warm-up run. `runCore()` returns the lines for the bench
 * orchestrator (scripts/bench.mjs runs this file as a "plain" entry).
 */
import * as zlib from "node:zlib";
import process, { memoryUsage } from "node:process";
import { pathToFileURL } from "node:url";
import v8 from "node:v8";
import vm from "node:vm";
import { createBLAKE3, createCRC32 } from "hash-wasm";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { runtimeFs } from "../adapters/runtime.ts";
import { Blake3 } from "../src/blake3.ts";
import { KeyIndex } from "../src/keyindex.ts";
import { WasmCore } from "../src/wasm.ts";
import { benchLine, type BenchLine, emitLines, median, mix32, RUNTIME } from "./harness.ts";

/** Bytes the CRC throughput is measured over (BENCH.md: 64 MiB in place). */
const CRC_BYTES = 64 * 1024 * 1024;
/** Record size of the per-call CRC rate (issue 3: 64-byte records). */
const CRC_RECORD_BYTES = 64;
/** Records per CRC rate run: all of CRC_BYTES, so calls walk fresh memory as a segment scan does. */
const CRC_RECORDS = CRC_BYTES / CRC_RECORD_BYTES;
/** Bytes hashed per BLAKE3 run, and per update call (a blob chunk). */
const BLAKE3_BYTES = 64 * 1024 * 1024;
const BLAKE3_UPDATE_BYTES = 1024 * 1024;
/** Index sizes (BENCH.md); --quick measures the first only. */
const INDEX_SIZES = [1_000_000, 10_000_000];
const INDEX_SIZES_QUICK = [1_000_000];
/** Runs per figure unless BENCH_RUNS says otherwise; BENCH.md asks for medians of at least 3. */
const RUNS_DEFAULT = 3;
/** Keys per lookupMany call in the batch line. */
const LOOKUP_BATCH = 4096;

export interface CoreOptions {
  /** 1M keys only. */
  quick: boolean;
  /** The runtime field of the lines (RUNTIME when omitted). */
  runtime?: string;
  /** Runs per figure; default BENCH_RUNS or 3. */
  runs?: number;
}

function rate(count: number, ms: number): number {
  return count / (ms / 1000);
}

// ---------------------------------------------------------------------------
// CRC

/** CRC-32 slice-by-16 in plain JS: the fairest pure-JS peer (what the crc-32 package does). */
const JS_TABLES = (() => {
  const t = new Uint32Array(16 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n]!;
    for (let k = 1; k < 16; k++) {
      c = t[c & 0xff]! ^ (c >>> 8);
      t[k * 256 + n] = c;
    }
  }
  return t;
})();

function crcJs(b: Uint8Array, seed = 0): number {
  const T = JS_TABLES;
  let c = ~seed;
  let i = 0;
  const n = b.length;
  for (; i + 16 <= n; i += 16) {
    const a = (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24)) ^ c;
    c = T[3840 + (a & 0xff)]! ^ T[3584 + ((a >>> 8) & 0xff)]! ^ T[3328 + ((a >>> 16) & 0xff)]! ^ T[3072 + (a >>> 24)]! ^
      T[2816 + b[i + 4]!]! ^ T[2560 + b[i + 5]!]! ^ T[2304 + b[i + 6]!]! ^ T[2048 + b[i + 7]!]! ^
      T[1792 + b[i + 8]!]! ^ T[1536 + b[i + 9]!]! ^ T[1280 + b[i + 10]!]! ^ T[1024 + b[i + 11]!]! ^
      T[768 + b[i + 12]!]! ^ T[512 + b[i + 13]!]! ^ T[256 + b[i + 14]!]! ^ T[b[i + 15]!]!;
  }
  for (; i < n; i++) c = T[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

type CrcFn = (bytes: Uint8Array, ptr: number) => number;

async function crcLines(runtime: string, runs: number): Promise<BenchLine[]> {
  const core = WasmCore.create();
  const ptr = core.borrowTableRegion(CRC_BYTES);
  const view = core.u8.subarray(ptr, ptr + CRC_BYTES);
  let x = 0x9e3779b9;
  const words = new Uint32Array(core.memory.buffer, ptr, CRC_BYTES / 4);
  for (let i = 0; i < words.length; i++) words[i] = x = mix32(x + i);

  const zlibCrc = (zlib as unknown as { crc32?: (b: Uint8Array, seed?: number) => number }).crc32;
  const hasher = await createCRC32();
  const stores: [string, CrcFn][] = [
    ["wasm", (b, p) => core.crc32At(p, b.length)],
    ["js", (b) => crcJs(b)],
    ["hash-wasm", (b) => {
      hasher.init();
      hasher.update(b);
      return (hasher.digest("binary") as Uint8Array).reduce((acc, byte) => (acc << 8) | byte, 0) >>> 0;
    }],
  ];
  if (zlibCrc) stores.splice(1, 0, ["zlib", (b) => zlibCrc(b) >>> 0]);

  const expected = core.crc32At(ptr, CRC_BYTES);
  const lines: BenchLine[] = [];
  for (const [store, fn] of stores) {
    if (fn(view, ptr) !== expected) throw new Error(`core-crc: ${store} disagrees with the wasm CRC`);
    const mbs: number[] = [];
    const recs: number[] = [];
    // js is ~20x slower: a quarter of the records keeps its run short, the rate is per record anyway.
    const records = store === "js" || store === "hash-wasm" ? CRC_RECORDS / 4 : CRC_RECORDS;
    for (let r = 0; r <= runs; r++) {
      let t = performance.now();
      fn(view, ptr);
      const wholeMs = performance.now() - t;
      t = performance.now();
      let acc = 0;
      for (let i = 0; i < records; i++) {
        acc ^= store === "wasm"
          ? core.crc32At(ptr + i * CRC_RECORD_BYTES, CRC_RECORD_BYTES)
          : fn(view.subarray(i * CRC_RECORD_BYTES, (i + 1) * CRC_RECORD_BYTES), 0);
      }
      const recordsMs = performance.now() - t;
      if (acc === 0.5) throw new Error("unreachable: keeps the loop alive");
      if (r === 0) continue; // warm-up
      mbs.push(CRC_BYTES / (1024 * 1024) / (wholeMs / 1000));
      recs.push(rate(records, recordsMs));
    }
    lines.push(benchLine({
      workload: "core-crc", store, runtime, n: records, value_bytes: CRC_RECORD_BYTES,
      mb_per_s: median(mbs), ops_per_s: median(recs), runs,
      note: `mb_per_s over ${CRC_BYTES / 1048576} MiB in wasm memory; ops_per_s over ${CRC_RECORD_BYTES}-byte records, one call each${store === "wasm" ? " (crc32At, no copy)" : " (a subarray view each)"}`,
    }));
  }
  return lines;
}

// ---------------------------------------------------------------------------
// BLAKE3

async function blake3Lines(runtime: string, runs: number): Promise<BenchLine[]> {
  const bytes = new Uint8Array(BLAKE3_BYTES);
  const words = new Uint32Array(bytes.buffer);
  let x = 0x51ed270b;
  for (let i = 0; i < words.length; i++) words[i] = x = mix32(x + i);
  const reference = await createBLAKE3(256);
  const stores: [string, () => Uint8Array][] = [
    ["wasm-simd", () => {
      const h = Blake3.create();
      for (let at = 0; at < bytes.length; at += BLAKE3_UPDATE_BYTES) h.update(bytes.subarray(at, at + BLAKE3_UPDATE_BYTES));
      const digest = h.digest();
      h.release();
      return digest;
    }],
    ["hash-wasm", () => {
      reference.init();
      for (let at = 0; at < bytes.length; at += BLAKE3_UPDATE_BYTES) reference.update(bytes.subarray(at, at + BLAKE3_UPDATE_BYTES));
      return reference.digest("binary") as Uint8Array;
    }],
  ];
  const expected = stores[1]![1]().join();
  const lines: BenchLine[] = [];
  for (const [store, fn] of stores) {
    if (fn().join() !== expected) throw new Error(`core-blake3: ${store} disagrees with hash-wasm`);
    const mbs: number[] = [];
    for (let r = 0; r <= runs; r++) {
      const t = performance.now();
      fn();
      const ms = performance.now() - t;
      if (r > 0) mbs.push(BLAKE3_BYTES / (1024 * 1024) / (ms / 1000)); // run 0 warms up
    }
    lines.push(benchLine({
      workload: "core-blake3", store, runtime, n: BLAKE3_BYTES / BLAKE3_UPDATE_BYTES, value_bytes: BLAKE3_UPDATE_BYTES,
      mb_per_s: median(mbs), runs,
      note: `BLAKE3-256 of ${BLAKE3_BYTES / 1048576} MiB in ${BLAKE3_UPDATE_BYTES / 1048576} MiB updates from a JS buffer (the copy into the hasher's memory included)`,
    }));
  }
  return lines;
}

// ---------------------------------------------------------------------------
// Index

/** n deterministic pseudo-random 32-byte keys, back to back. */
function makeKeyBytes(n: number, seed: number): Uint8Array {
  const keys = new Uint8Array(n * 32);
  const words = new Uint32Array(keys.buffer);
  let x = seed;
  for (let i = 0; i < words.length; i++) words[i] = x = mix32(x + i);
  return keys;
}

/** The same keys in a random order (Fisher-Yates by key), for lookups that miss the cache as real gets do. */
function shuffledKeyBytes(keys: Uint8Array, n: number, seed: number): Uint8Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  let x = seed;
  for (let i = n - 1; i > 0; i--) {
    x = mix32(x + i);
    const j = x % (i + 1);
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }
  const out = new Uint8Array(n * 32);
  for (let i = 0; i < n; i++) out.set(keys.subarray(order[i]! * 32, order[i]! * 32 + 32), i * 32);
  return out;
}

const HEX_PAIRS = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    const h = i.toString(16).padStart(2, "0");
    t[i] = h.charCodeAt(0) | (h.charCodeAt(1) << 8);
  }
  return t;
})();
const hexOut = new Uint16Array(32);
const hexOutBytes = new Uint8Array(hexOut.buffer);
const latin1 = new TextDecoder("latin1");
/** The key as 64 hex chars: a table and one TextDecoder call, the fastest of four ways measured (concat, Buffer, fromCharCode). */
function hexKey(key: Uint8Array): string {
  for (let i = 0; i < 32; i++) hexOut[i] = HEX_PAIRS[key[i]!]!;
  return latin1.decode(hexOutBytes);
}

interface IndexRun {
  insertMs: number;
  lookupMs: number;
  batchMs: number | null;
  bytesPerKey: number;
  /** Checkpoint bytes, ms to write them (no datasync), ms to load them into a fresh core, ms to read them plainly. */
  checkpointBytes?: number;
  writeMs?: number;
  loadMs?: number;
  readMs?: number;
}

/** Where checkpoints are written: the repo's gitignored .bench-data (the same disk as real stores, not a tmpfs). */
function checkpointDir(): string {
  const dir = join(process.cwd(), ".bench-data", `core-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Pieces in which the plain read of the checkpoint (the disk-speed reference) reads, as loadCheckpoint does. */
const PLAIN_READ_CHUNK = 1024 * 1024;

/**
 * Writes the index as a checkpoint, then loads it into a fresh core and, as
 * the reference, reads the same file into a fresh Uint8Array through the
 * same adapter: the file is in the page cache for both, and both pay the
 * first touch of fresh memory, so the ratio is the cost of CRC + verify.
 */
function checkpointRun(index: KeyIndex, run: IndexRun): void {
  const dir = checkpointDir();
  const path = join(dir, "index.1");
  try {
    let f = runtimeFs.open(path, "w+");
    let t = performance.now();
    const bytes = index.writeCheckpoint(f, { segment: 1, offset: 8, txid: 1n });
    run.writeMs = performance.now() - t;
    f.close();
    run.checkpointBytes = bytes;

    f = runtimeFs.open(path, "r");
    const plain = new Uint8Array(bytes);
    t = performance.now();
    for (let done = 0; done < bytes;) done += f.read(plain.subarray(done, Math.min(bytes, done + PLAIN_READ_CHUNK)), done);
    run.readMs = performance.now() - t;
    f.close();

    const core = WasmCore.create();
    f = runtimeFs.open(path, "r");
    t = performance.now();
    const loaded = KeyIndex.loadCheckpoint(core, f).index;
    run.loadMs = performance.now() - t;
    f.close();
    if (loaded.count !== index.count) throw new Error("core-index: the checkpoint loaded another count");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function runWasmIndex(keys: Uint8Array, shuffled: Uint8Array, n: number): IndexRun {
  const index = new KeyIndex(WasmCore.create());
  let t = performance.now();
  for (let i = 0; i < n; i++) index.set(keys.subarray(i * 32, i * 32 + 32), i & 0xffff, i, 100);
  const insertMs = performance.now() - t;
  if (index.count !== n) throw new Error(`core-index: ${index.count} keys after ${n} inserts`);

  t = performance.now();
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = index.lookup(shuffled.subarray(i * 32, i * 32 + 32));
    sum += index.offsetAt(e);
  }
  const lookupMs = performance.now() - t;

  const out = new Int32Array(LOOKUP_BATCH);
  const core = index.core;
  t = performance.now();
  let sum2 = 0;
  for (let done = 0; done < n; done += LOOKUP_BATCH) {
    const c = Math.min(LOOKUP_BATCH, n - done);
    index.lookupMany(shuffled.subarray(done * 32, (done + c) * 32), c, out);
    for (let j = 0; j < c; j++) sum2 += core.entryOffset(out[j]!);
  }
  const batchMs = performance.now() - t;
  if (sum !== sum2 || sum !== (n * (n - 1)) / 2) throw new Error("core-index: lookups found wrong values");
  const run: IndexRun = { insertMs, lookupMs, batchMs, bytesPerKey: index.memoryBytes / n };
  checkpointRun(index, run);
  return run;
}

/**
 * A full GC, so heap figures mean something: V8's gc() exposed after start
 * (works in Node and Deno); undefined when the runtime refuses.
 */
const collectGarbage: (() => void) | undefined = (() => {
  try {
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("gc") as unknown;
    return typeof gc === "function" ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  }
})();

function runJsMap(keys: Uint8Array, shuffled: Uint8Array, n: number): IndexRun {
  collectGarbage?.();
  const heapBefore = memoryUsage().heapUsed;
  const map = new Map<string, number>();
  // The values beside the map, as a careful JS store would keep them (no object per key).
  const values = new Uint32Array(n * 3);
  let t = performance.now();
  for (let i = 0; i < n; i++) {
    const key = hexKey(keys.subarray(i * 32, i * 32 + 32));
    let e = map.get(key);
    if (e === undefined) map.set(key, (e = map.size - 0));
    values[e * 3] = i & 0xffff;
    values[e * 3 + 1] = i;
    values[e * 3 + 2] = 100;
  }
  const insertMs = performance.now() - t;
  collectGarbage?.();
  // The Map's heap (keys, table) plus the values array (off-heap).
  const bytesPerKey = collectGarbage ? (memoryUsage().heapUsed - heapBefore + values.byteLength) / n : NaN;
  if (map.size !== n) throw new Error(`core-index: js-map has ${map.size} keys after ${n} inserts`);

  t = performance.now();
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = map.get(hexKey(shuffled.subarray(i * 32, i * 32 + 32)))!;
    sum += values[e * 3 + 1]!;
  }
  const lookupMs = performance.now() - t;
  if (sum !== (n * (n - 1)) / 2) throw new Error("core-index: js-map lookups found wrong values");
  return { insertMs, lookupMs, batchMs: null, bytesPerKey };
}

function indexLines(runtime: string, runs: number, sizes: readonly number[]): BenchLine[] {
  const lines: BenchLine[] = [];
  for (const n of sizes) {
    const keys = makeKeyBytes(n, 0x5e65_7a01 ^ n);
    const shuffled = shuffledKeyBytes(keys, n, 0x0dde_0f75);
    for (const [store, fn] of [["wasm", runWasmIndex], ["js-map", runJsMap]] as const) {
      const results: IndexRun[] = [];
      for (let r = 0; r <= runs; r++) {
        const res = fn(keys, shuffled, n);
        if (r > 0) results.push(res); // run 0 warms the JIT
      }
      const pick = (f: (x: IndexRun) => number) => median(results.map(f));
      const bytesPerKey = pick((x) => x.bytesPerKey);
      const common = { store, runtime, n, value_bytes: null, runs, bytes_per_key: Number.isNaN(bytesPerKey) ? null : bytesPerKey };
      lines.push(benchLine({ ...common, workload: "core-index-insert", ops_per_s: pick((x) => rate(n, x.insertMs)),
        note: store === "wasm" ? "KeyIndex.set from empty, growth included" : "Map<hex, entry> + Uint32Array values; bytes_per_key: heapUsed growth after a full GC, plus the values" }));
      lines.push(benchLine({ ...common, workload: "core-index-lookup", ops_per_s: pick((x) => rate(n, x.lookupMs)),
        note: "existing keys in random order, reading the offset" }));
      if (store === "wasm") {
        lines.push(benchLine({ ...common, workload: "core-index-lookup-batch", ops_per_s: pick((x) => rate(n, x.batchMs!)),
          note: `lookupMany ${LOOKUP_BATCH} keys per call, then reading each offset` }));
        const mib = results[0]!.checkpointBytes! / (1024 * 1024);
        const ck = { runtime, n, value_bytes: null, runs, bytes_per_key: results[0]!.checkpointBytes! / n };
        lines.push(benchLine({ ...ck, workload: "core-index-checkpoint-write", store, ms: pick((x) => x.writeMs!),
          mb_per_s: pick((x) => mib / (x.writeMs! / 1000)), note: "writeCheckpoint: CRC + File.write, no datasync; bytes_per_key = file bytes per key" }));
        lines.push(benchLine({ ...ck, workload: "core-index-checkpoint-load", store, ms: pick((x) => x.loadMs!),
          mb_per_s: pick((x) => mib / (x.loadMs! / 1000)), note: "loadCheckpoint into a fresh core from the page cache: read + CRC + verify, no rehash" }));
        lines.push(benchLine({ ...ck, workload: "core-index-checkpoint-load", store: "fs-limit", ms: pick((x) => x.readMs!),
          mb_per_s: pick((x) => mib / (x.readMs! / 1000)), note: "the same file read into a fresh Uint8Array through the same adapter, 1 MiB pieces" }));
      }
    }
  }
  return lines;
}

/**
 * Runs the core workload and returns its lines (medians of `runs`).
 *
 * @example
 * const lines = await runCore({ quick: true, runtime: "node" });
 */
export async function runCore(opts: CoreOptions): Promise<BenchLine[]> {
  const runtime = opts.runtime ?? RUNTIME;
  const runs = opts.runs ?? (Number(process.env.BENCH_RUNS) || RUNS_DEFAULT);
  const lines = await crcLines(runtime, runs);
  lines.push(...await blake3Lines(runtime, runs));
  lines.push(...indexLines(runtime, runs, opts.quick ? INDEX_SIZES_QUICK : INDEX_SIZES));
  return lines;
}

const isMain = (import.meta as { main?: boolean }).main ??
  (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href);
if (isMain) emitLines(await runCore({ quick: process.argv.includes("--quick") }));
