/**
 * The benchmark harness: what every bench file shares, so that all stores
 * are measured the same way (BENCH.md is the spec).
 *
 * Map of this file:
 *   1. runtime and clock            `RUNTIME`, `nowMs`, `epochMs`
 *   2. data generators              `keyAt`, `makeKeys`, `makeValues`, `shuffledOrder`
 *   3. measuring                    `peakRssMb`, `diskUsageMb`, `median`, `percentile`
 *   4. result lines                 `BenchLine`, `benchLine`, `formatLine`, `medianLines`
 *   5. the peer contract            `PeerStore` (bench/peers/*.ts implement it)
 *   6. the child protocol           `BenchCase`, `benchMain`
 *   7. the ratio table, RESULTS.md  `ratioTable`, `replaceResultsBlocks`
 *
 * How a run is driven: `scripts/bench.mjs` (the orchestrator) spawns one
 * child process per measurement, under Node (`node dist/bench/X.js`) and
 * Deno (`deno run -A bench/X.ts`). A bench file declares its cases (one
 * workload on one store) and hands them to `benchMain`, which speaks this
 * protocol on argv and stdout:
 *
 *   X --list [--quick]                      one JSON line per case runnable in this runtime:
 *                                           {"case":"W1/lmdb","workload":"W1","store":"lmdb","prepare":false,"runs":3}
 *   X --case W1/lmdb --phase prepare --dir D   untimed setup into D (e.g. load the W1 store for W3)
 *   X --case W1/lmdb --phase run --dir D        one measurement; prints its BenchLine(s) as JSON lines
 *
 * Each run is a fresh process, so peak RSS is that run's own and W3/W5 open
 * the store cold in the process. The orchestrator repeats a case `runs`
 * times (1 with --quick), takes the median of every numeric field across
 * the runs, and removes the data directories. A bench file that does not
 * use `benchMain` can still be registered as "plain": it is run once and
 * every JSON line it prints is taken as is (see scripts/bench.mjs).
 *
 * Units: MB means MiB (2^20 bytes), in mb_per_s, peak_rss_mb and disk_mb.
 */
import { readFileSync, readdirSync, lstatSync } from "node:fs";
import process, { memoryUsage } from "node:process";

// ---------------------------------------------------------------------------
// 1. Runtime and clock

export type Runtime = "node" | "deno";

/** The runtime this process is, for the `runtime` field and for picking cases. */
export const RUNTIME: Runtime = (globalThis as { Deno?: unknown }).Deno !== undefined ? "deno" : "node";

/**
 * A monotonic clock in milliseconds (sub-millisecond resolution in both runtimes).
 *
 * @example
 * const t = nowMs(); work(); const elapsedMs = nowMs() - t;
 */
export function nowMs(): number {
  return performance.now();
}

/**
 * Wall-clock milliseconds since the epoch with sub-millisecond resolution:
 * comparable across processes, so a child can measure from the instant its
 * parent spawned it (W5).
 *
 * @example
 * const msSinceSpawn = epochMs() - Number(process.env[SPAWN_EPOCH_ENV]);
 */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Environment variable through which the orchestrator passes the spawn instant (epochMs) to a child. */
export const SPAWN_EPOCH_ENV = "BENCH_SPAWN_EPOCH_MS";

// ---------------------------------------------------------------------------
// 2. Data generators: deterministic, so every store and every process sees
//    the same keys and values.

/** Seed of the keys of every workload; W3/W5 regenerate the W1 keys from it in a fresh process. */
export const KEY_SEED = 0x5e65_7a01;
/** Seed of the value bytes. */
export const VALUE_SEED = 0x0b1e_55ed;
/** Seed of the W3 get order. */
export const ORDER_SEED = 0x0dde_0f75;
/** Key length: segstore ids are 32 bytes. */
export const KEY_BYTES = 32;
/**
 * Values are views into one pool of pseudo-random bytes, so generating them
 * costs nothing inside a timed loop and takes no memory per value. 4 MiB
 * holds a thousand distinct 4 KiB values; consecutive values never overlap,
 * so no store can compress one value against its neighbour.
 */
export const VALUE_POOL_BYTES = 4 * 1024 * 1024;

const GOLDEN_GAMMA_32 = 0x9e37_79b9;

/**
 * The 32-bit finaliser of MurmurHash3: a bijection on u32 that mixes every
 * input bit into every output bit. With a counter as input it is a
 * splitmix-style generator: stateless, so any element is computed on its own.
 */
export function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85eb_ca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2_ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/**
 * Key number `i` (32 pseudo-random bytes), computed without generating the
 * ones before it: W5 needs one key of a 200,000-key store in a fresh process.
 * Distinct for every i below 2^29 (word 0 is a bijection of i there).
 *
 * @example
 * const k = keyAt(7); // the same 32 bytes in every process and runtime
 */
export function keyAt(i: number, seed: number = KEY_SEED, out: Uint8Array = new Uint8Array(KEY_BYTES)): Uint8Array {
  const view = new DataView(out.buffer, out.byteOffset, KEY_BYTES);
  for (let word = 0; word < KEY_BYTES / 4; word++) {
    const counter = (seed + Math.imul(i * (KEY_BYTES / 4) + word, GOLDEN_GAMMA_32)) >>> 0;
    view.setUint32(word * 4, mix32(counter), true);
  }
  return out;
}

/**
 * Keys 0..n-1, as views into one buffer (one allocation, not n).
 *
 * @example
 * const keys = makeKeys(200_000); keys[5] // equals keyAt(5)
 */
export function makeKeys(n: number, seed: number = KEY_SEED): Uint8Array[] {
  const all = new Uint8Array(n * KEY_BYTES);
  const keys: Uint8Array[] = new Array(n);
  for (let i = 0; i < n; i++) keys[i] = keyAt(i, seed, all.subarray(i * KEY_BYTES, (i + 1) * KEY_BYTES));
  return keys;
}

let valuePool: Uint8Array | undefined;

/** The shared pool the values are cut from (VALUE_POOL_BYTES pseudo-random bytes). */
export function valuePoolBytes(): Uint8Array {
  if (valuePool === undefined) {
    valuePool = new Uint8Array(VALUE_POOL_BYTES);
    const words = new DataView(valuePool.buffer);
    for (let w = 0; w < VALUE_POOL_BYTES / 4; w++) words.setUint32(w * 4, mix32((VALUE_SEED + Math.imul(w, GOLDEN_GAMMA_32)) >>> 0), true);
  }
  return valuePool;
}

/**
 * Where value number `i` of `size` bytes starts in the pool. A stride a
 * little above `size` keeps consecutive values apart.
 */
export function valueOffset(i: number, size: number): number {
  if (size > VALUE_POOL_BYTES / 2) throw new RangeError(`valueOffset: ${size} B values do not fit the ${VALUE_POOL_BYTES} B pool twice`);
  const stride = size + 13;
  const slots = Math.floor((VALUE_POOL_BYTES - size) / stride);
  return (i % slots) * stride;
}

/** Value number `i`: `size` deterministic bytes (a view into the pool; do not write to it). */
export function valueAt(i: number, size: number): Uint8Array {
  const offset = valueOffset(i, size);
  return valuePoolBytes().subarray(offset, offset + size);
}

/**
 * Values 0..n-1 of `size` bytes each, as views into the pool.
 *
 * @example
 * const values = makeValues(1000, 100); values[3].length // 100
 */
export function makeValues(n: number, size: number): Uint8Array[] {
  const values: Uint8Array[] = new Array(n);
  for (let i = 0; i < n; i++) values[i] = valueAt(i, size);
  return values;
}

/**
 * A pseudo-random permutation of 0..n-1 (Fisher-Yates over a seeded
 * generator): the W3 order of gets.
 *
 * @example
 * const order = shuffledOrder(200_000); // every index once
 */
export function shuffledOrder(n: number, seed: number = ORDER_SEED): Uint32Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  let state = seed >>> 0;
  for (let i = n - 1; i > 0; i--) {
    state = (state + GOLDEN_GAMMA_32) >>> 0;
    const j = Math.floor((mix32(state) / 2 ** 32) * (i + 1));
    const t = order[i]!; order[i] = order[j]!; order[j] = t;
  }
  return order;
}

/** True when two byte arrays hold the same bytes. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---------------------------------------------------------------------------
// 3. Measuring

/** Bytes in a MB, as every figure here counts them. */
export const MB = 1024 * 1024;

/**
 * Peak resident set size of this process so far, in MB. Reads VmHWM from
 * /proc/self/status (Linux; the kernel's own high-water mark, right in both
 * runtimes and unaffected by how often we sample); elsewhere falls back to
 * the current RSS, which is a lower bound.
 *
 * @example
 * benchLine({ workload: "W1", store: "lmdb", peak_rss_mb: peakRssMb() })
 */
export function peakRssMb(): number {
  try {
    const status = readFileSync("/proc/self/status", "utf8");
    const m = /VmHWM:\s+(\d+)\s+kB/.exec(status);
    if (m) return Number(m[1]) / 1024;
  } catch {
    // Not Linux: fall through.
  }
  return memoryUsage().rss / MB;
}

/**
 * Bytes a directory tree occupies on disk, as `du` counts them (allocated
 * 512-byte blocks, so sparse files count what they use), in MB. A missing
 * path counts 0.
 *
 * @example
 * diskUsageMb(".bench-data/W1-lmdb/run-1") // 49.9
 */
export function diskUsageMb(path: string): number {
  let bytes = 0;
  const walk = (p: string): void => {
    let st;
    try {
      st = lstatSync(p);
    } catch {
      return;
    }
    bytes += (st.blocks ?? Math.ceil(st.size / 512)) * 512;
    if (st.isDirectory()) for (const name of readdirSync(p)) walk(`${p}/${name}`);
  };
  walk(path);
  return bytes / MB;
}

/**
 * The median of some numbers (the mean of the middle two for an even count).
 *
 * @example
 * median([3, 1, 2]) // 2
 */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new RangeError("median of no numbers");
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * The p-th percentile (0..100) of numbers already sorted ascending, by the
 * nearest-rank method.
 *
 * @example
 * percentile([1, 2, 3, 4], 50) // 2
 */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) throw new RangeError("percentile of no numbers");
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}

// ---------------------------------------------------------------------------
// 4. Result lines

/**
 * One measurement, exactly the BENCH.md fields. A field that does not apply
 * is null. `note` says which setting made the commits durable (and anything
 * else a reader must know to trust the figure).
 */
export interface BenchLine {
  workload: string;
  store: string;
  runtime: string;
  n: number | null;
  value_bytes: number | null;
  ops_per_s: number | null;
  mb_per_s: number | null;
  peak_rss_mb: number | null;
  disk_mb: number | null;
  runs: number;
  durable: boolean | null;
  ms: number | null;
  p50_ms: number | null;
  p99_ms: number | null;
  bytes_per_key: number | null;
  note: string | null;
}

/** The fields in the order every line prints them (BENCH.md's order, then the optional ones). */
export const LINE_FIELDS: readonly (keyof BenchLine)[] = [
  "workload", "store", "runtime", "n", "value_bytes", "ops_per_s", "mb_per_s", "peak_rss_mb", "disk_mb",
  "runs", "durable", "ms", "p50_ms", "p99_ms", "bytes_per_key", "note",
];

/** The numeric fields that the median across runs applies to. */
const MEDIAN_FIELDS: readonly (keyof BenchLine)[] = [
  "ops_per_s", "mb_per_s", "peak_rss_mb", "disk_mb", "ms", "p50_ms", "p99_ms", "bytes_per_key",
];

/**
 * A line with every field present: the given ones, null for the rest, this
 * runtime, and runs = 1 (the orchestrator sets the real count).
 *
 * @example
 * benchLine({ workload: "W1", store: "lmdb", n: 200000, value_bytes: 100, ops_per_s: 1e5 })
 */
export function benchLine(fields: Partial<BenchLine> & { workload: string; store: string }): BenchLine {
  const line = {} as Record<string, unknown>;
  for (const f of LINE_FIELDS) line[f] = null;
  line.runtime = RUNTIME;
  line.runs = 1;
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) line[k] = v;
  return line as unknown as BenchLine;
}

/** Rounds a figure for printing: 3 significant digits below 100, whole numbers above. */
export function roundFigure(x: number | null): number | null {
  if (x === null || !Number.isFinite(x)) return x;
  if (Math.abs(x) >= 100) return Math.round(x);
  return Number(x.toPrecision(3));
}

/**
 * One JSON line, fields in LINE_FIELDS order, figures rounded.
 *
 * @example
 * console.log(formatLine(benchLine({ workload: "W4", store: "fs-limit", ops_per_s: 6200.4 })));
 */
export function formatLine(line: BenchLine): string {
  const out: Record<string, unknown> = {};
  for (const f of LINE_FIELDS) {
    const v = line[f];
    out[f] = typeof v === "number" && MEDIAN_FIELDS.includes(f) ? roundFigure(v) : (v ?? null);
  }
  return JSON.stringify(out);
}

/**
 * Prints lines on stdout, one JSON object per line: what the orchestrator collects.
 *
 * @example
 * emitLines([benchLine({ workload: "core-crc", store: "wasm", mb_per_s: 5000 })]);
 */
export function emitLines(lines: readonly BenchLine[]): void {
  for (const line of lines) console.log(formatLine(line));
}

/** The identity of a line across runs: workload, store, runtime. */
export function lineKey(line: Pick<BenchLine, "workload" | "store" | "runtime">): string {
  return `${line.workload}\u0000${line.store}\u0000${line.runtime}`;
}

/**
 * Merges the lines of several runs of one case: lines with the same
 * workload, store and runtime become one, each numeric figure the median of
 * its runs, `runs` the number of runs it was measured in.
 *
 * @example
 * medianLines([[a1], [a2], [a3]]) // [a with median ops_per_s, runs: 3]
 */
export function medianLines(runs: readonly (readonly BenchLine[])[]): BenchLine[] {
  const groups = new Map<string, BenchLine[]>();
  for (const lines of runs) {
    for (const line of lines) {
      const key = lineKey(line);
      let group = groups.get(key);
      if (group === undefined) groups.set(key, (group = []));
      group.push(line);
    }
  }
  const merged: BenchLine[] = [];
  for (const group of groups.values()) {
    const line = { ...group[0]! } as Record<string, unknown>;
    for (const f of MEDIAN_FIELDS) {
      const xs = group.map((l) => l[f]).filter((v): v is number => typeof v === "number");
      line[f] = xs.length === 0 ? null : median(xs);
    }
    line.runs = group.reduce((sum, l) => sum + (l.runs ?? 1), 0);
    merged.push(line as unknown as BenchLine);
  }
  return merged;
}

/**
 * Parses the JSON lines of a child's stdout that look like results; other text is ignored.
 *
 * @example
 * parseLines('starting\n{"workload":"W1","store":"lmdb","ops_per_s":1}\n') // one line, other fields null
 */
export function parseLines(stdout: string): BenchLine[] {
  const lines: BenchLine[] = [];
  for (const text of stdout.split("\n")) {
    const t = text.trim();
    if (!t.startsWith("{")) continue;
    try {
      const obj = JSON.parse(t) as Partial<BenchLine>;
      if (typeof obj.workload === "string" && typeof obj.store === "string") {
        lines.push(benchLine({ ...obj, workload: obj.workload, store: obj.store, runtime: obj.runtime ?? RUNTIME }));
      }
    } catch {
      // Not a result line.
    }
  }
  return lines;
}

// ---------------------------------------------------------------------------
// 5. The peer contract: what a store must offer to run the store workloads
//    (bench/store.ts). One file per store in bench/peers/ implements it.

/** An open store, seen through the operations the workloads need. */
export interface PeerStore {
  /** How commits are made durable (fsync per transaction), printed in each line's note. */
  readonly note: string;
  /**
   * Puts keys[start..end) with values[start..end) and makes them durable
   * before returning (or before the promise settles). One transaction where
   * the store allows it; a store that caps a transaction splits it and says
   * so in its note.
   */
  writeBatch(keys: readonly Uint8Array[], values: readonly Uint8Array[], start: number, end: number): void | Promise<void>;
  /** The synchronous point get, where the store has one. */
  get?(key: Uint8Array): Uint8Array | undefined;
  /** The asynchronous point get, where the store has one. */
  getAsync?(key: Uint8Array): Promise<Uint8Array | undefined>;
  /** Bytes the key index takes, and how many keys it holds when the store says, where the store reports it (segstore's stats()). */
  indexStats?(): { indexBytes: number; keys?: number } | undefined;
  close(): void | Promise<void>;
}

/** What each bench/peers/*.ts exports. */
export interface PeerModule {
  /** The runtimes the peer runs in. */
  readonly runtimes: readonly Runtime[];
  /** Opens (with `create`, creates) the store kept in directory `dir`. */
  openPeer(dir: string, options: { create: boolean }): Promise<PeerStore>;
}

// ---------------------------------------------------------------------------
// 6. The child protocol

/** Runs per case when not --quick: BENCH.md asks for medians of at least 3. */
export const RUNS_DEFAULT = 3;
/** Runs per case with --quick: a smoke test. */
export const RUNS_QUICK = 1;

/** What a case's prepare and run get to work with. */
export interface CaseContext {
  /** The case's data directory: fresh for each run, or the prepared one (it may not exist yet; create it). */
  dir: string;
  /** Small n, for smoke tests. */
  quick: boolean;
  /** When the orchestrator spawned this process (epochMs), else this process's time origin. */
  spawnEpochMs: number;
}

/** One workload on one store. */
export interface BenchCase {
  workload: string;
  store: string;
  /** Where the case runs; default both runtimes. */
  runtimes?: readonly Runtime[];
  /** Untimed setup, run once before the runs into the directory they share (W3, W5: load the W1 store). */
  prepare?(ctx: CaseContext): Promise<void>;
  /** One measurement; the line(s) it returns are printed for the orchestrator. */
  run(ctx: CaseContext): Promise<BenchLine | BenchLine[]>;
  /** Runs wanted when not --quick; default RUNS_DEFAULT. */
  runs?: number;
}

/** The name a case goes by on the command line: "W1/lmdb". */
export function caseName(c: Pick<BenchCase, "workload" | "store">): string {
  return `${c.workload}/${c.store}`;
}

/** Command-line arguments of a bench child. */
export interface ChildArgs {
  list: boolean;
  quick: boolean;
  caseName?: string;
  phase: "prepare" | "run";
  dir?: string;
}

/**
 * Parses a bench child's argv (see the protocol at the top of this file).
 *
 * @example
 * parseChildArgs(["--case", "W3/lmdb", "--phase", "prepare", "--dir", "d"]) // { caseName: "W3/lmdb", phase: "prepare", dir: "d", ... }
 */
export function parseChildArgs(argv: readonly string[]): ChildArgs {
  const args: ChildArgs = { list: false, quick: false, phase: "run" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--list") args.list = true;
    else if (a === "--quick") args.quick = true;
    else if (a === "--case") args.caseName = argv[++i];
    else if (a === "--dir") args.dir = argv[++i];
    else if (a === "--phase") {
      const p = argv[++i];
      if (p !== "prepare" && p !== "run") throw new Error(`bench: --phase takes prepare or run, not ${p}`);
      args.phase = p;
    } else throw new Error(`bench: unknown argument ${a} (expected --list, --quick, --case W/STORE, --phase prepare|run, --dir PATH)`);
  }
  return args;
}

/** The arguments after the script name, in either runtime. */
export function scriptArgs(): string[] {
  const deno = (globalThis as { Deno?: { args: string[] } }).Deno;
  if (deno !== undefined) return [...deno.args];
  return (globalThis as unknown as { process: { argv: string[] } }).process.argv.slice(2);
}

/** Reads the spawn instant the orchestrator passed, else this process's own start. */
function spawnEpochFromEnv(): number {
  const env = (globalThis as unknown as { process?: { env: Record<string, string | undefined> } }).process?.env;
  const given = Number(env?.[SPAWN_EPOCH_ENV]);
  return Number.isFinite(given) && given > 0 ? given : performance.timeOrigin;
}

/**
 * The main of a bench file: lists its cases, or prepares or runs one, per
 * the protocol at the top of this file. Exits non-zero with the error on
 * stderr when the case fails, so the orchestrator reports it and goes on.
 *
 * @example
 * await benchMain([{ workload: "W4", store: "fs-limit", run: async (ctx) => benchLine({...}) }]);
 */
export async function benchMain(cases: readonly BenchCase[], argv: readonly string[] = scriptArgs()): Promise<void> {
  try {
    await benchMainCase(cases, argv);
  } catch (e) {
    // One clean line first, for the orchestrator's summary; then the stack for whoever reads the log.
    const message = e instanceof Error ? e.message : String(e);
    console.error(`${CHILD_ERROR_PREFIX}${message.replace(/\s*\n\s*/g, " ")}`);
    if (e instanceof Error && e.stack) console.error(e.stack);
    exitProcess(1);
  }
}

/** Prefix of the one line a failed child prints on stderr to say why. */
export const CHILD_ERROR_PREFIX = "bench-error: ";

/** Sets the exit code in either runtime; the process ends when its work is done. */
function exitProcess(code: number): void {
  process.exitCode = code;
}

/** benchMain's work: list, prepare or run. */
async function benchMainCase(cases: readonly BenchCase[], argv: readonly string[]): Promise<void> {
  const args = parseChildArgs(argv);
  const here = cases.filter((c) => (c.runtimes ?? ["node", "deno"]).includes(RUNTIME));
  if (args.list) {
    for (const c of here) {
      console.log(JSON.stringify({
        case: caseName(c), workload: c.workload, store: c.store, prepare: c.prepare !== undefined,
        runs: args.quick ? RUNS_QUICK : (c.runs ?? RUNS_DEFAULT),
      }));
    }
    return;
  }
  const wanted = here.find((c) => caseName(c) === args.caseName);
  if (wanted === undefined) {
    throw new Error(`bench: no case ${args.caseName} in ${RUNTIME}; cases here: ${here.map(caseName).join(", ")}`);
  }
  if (args.dir === undefined) throw new Error("bench: --dir is required to prepare or run a case");
  const ctx: CaseContext = { dir: args.dir, quick: args.quick, spawnEpochMs: spawnEpochFromEnv() };
  if (args.phase === "prepare") {
    if (wanted.prepare === undefined) throw new Error(`bench: case ${args.caseName} has nothing to prepare`);
    await wanted.prepare(ctx);
    return;
  }
  const result = await wanted.run(ctx);
  emitLines(Array.isArray(result) ? result : [result]);
}

// ---------------------------------------------------------------------------
// 7. The ratio table and RESULTS.md

/**
 * The stores every other row is compared with: segstore, and for the core
 * workloads (which measure segstore's WebAssembly core on its own) "wasm".
 */
export const REFERENCE_STORES: readonly string[] = ["segstore", "wasm"];

/**
 * The row `line` is compared with: a reference store's row of the same
 * workload and runtime, preferring one of the same n (core measures at
 * 1M and 10M keys).
 */
function referenceOf(lines: readonly BenchLine[], line: BenchLine): BenchLine | undefined {
  const candidates = lines.filter((l) => REFERENCE_STORES.includes(l.store) && l.workload === line.workload && l.runtime === line.runtime);
  return candidates.find((l) => l.n === line.n) ?? candidates[0];
}

/**
 * The figure a row is ranked by: throughput where there is one, else latency.
 *
 * @example
 * headlineOf(w5line) // { value: 79.5, unit: "ms", higherIsBetter: false }
 */
export function headlineOf(line: BenchLine): { value: number; unit: string; higherIsBetter: boolean } | undefined {
  if (line.ops_per_s !== null) return { value: line.ops_per_s, unit: "ops/s", higherIsBetter: true };
  if (line.mb_per_s !== null) return { value: line.mb_per_s, unit: "MB/s", higherIsBetter: true };
  if (line.ms !== null) return { value: line.ms, unit: "ms", higherIsBetter: false };
  return undefined;
}

/** Workload names in the order BENCH.md lists them; others sort after, by name. */
const WORKLOAD_ORDER = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9", "core"];

/** Sort key of a workload name ("W6-read" sorts with W6). */
export function workloadRank(workload: string): number {
  const base = workload.split("-")[0]!;
  const i = WORKLOAD_ORDER.indexOf(base);
  return i < 0 ? WORKLOAD_ORDER.length : i;
}

/** Node rows first, then Deno, then anything else. */
function runtimeRank(runtime: string): number {
  const i = ["node", "deno"].indexOf(runtime);
  return i < 0 ? 2 : i;
}

function formatNumber(x: number | null): string {
  if (x === null) return "";
  const r = roundFigure(x)!;
  return Math.abs(r) >= 1000 ? r.toLocaleString("en-US") : String(r);
}

/**
 * The human table: one row per line, grouped by workload and runtime, with
 * the ratio segstore ÷ this store of the headline figure (ops/s or MB/s:
 * above 1 means segstore is faster; for W5's ms, above 1 means segstore is
 * slower). Markdown, readable as plain text too.
 *
 * @example
 * console.log(ratioTable(lines));
 */
export function ratioTable(lines: readonly BenchLine[]): string {
  const sorted = [...lines].sort((a, b) =>
    workloadRank(a.workload) - workloadRank(b.workload) || a.workload.localeCompare(b.workload) ||
    runtimeRank(a.runtime) - runtimeRank(b.runtime) ||
    Number(REFERENCE_STORES.includes(b.store)) - Number(REFERENCE_STORES.includes(a.store)) ||
    a.store.localeCompare(b.store) || (a.n ?? 0) - (b.n ?? 0));
  const header = ["workload", "runtime", "store", "n", "value B", "ops/s", "MB/s", "ms", "p50 ms", "p99 ms", "peak RSS MB", "disk MB", "B/key", "runs", "segstore ÷ store"];
  const rows: string[][] = [];
  for (const line of sorted) {
    const reference = referenceOf(lines, line);
    let ratio = "";
    const mine = reference && headlineOf(reference);
    const theirs = headlineOf(line);
    if (reference === line) ratio = "1";
    else if (mine && theirs && mine.unit === theirs.unit && theirs.value !== 0) {
      ratio = `${(mine.value / theirs.value).toFixed(2)}${theirs.higherIsBetter ? "" : " (ms)"}`;
    } else if (!reference) ratio = "no segstore row";
    rows.push([
      line.workload, line.runtime, line.store, formatNumber(line.n), formatNumber(line.value_bytes),
      formatNumber(line.ops_per_s), formatNumber(line.mb_per_s), formatNumber(line.ms), formatNumber(line.p50_ms), formatNumber(line.p99_ms),
      formatNumber(line.peak_rss_mb), formatNumber(line.disk_mb), formatNumber(line.bytes_per_key), String(line.runs), ratio,
    ]);
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const fmt = (cells: string[]) => `| ${cells.map((c, i) => (i >= 3 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(" | ")} |`;
  const rule = `|${widths.map((w, i) => (i >= 3 ? "-".repeat(w + 1) + ":" : "-".repeat(w + 2))).join("|")}|`;
  return [fmt(header), rule, ...rows.map(fmt)].join("\n");
}

/** Marks around one generated block of RESULTS.md, one block per workload group. */
export function resultsMarkers(group: string): { start: string; end: string } {
  return { start: `<!-- bench:auto ${group} start -->`, end: `<!-- bench:auto ${group} end -->` };
}

/**
 * Replaces (or appends) the generated block of each group in the text of
 * RESULTS.md, leaving everything outside the marks as written by hand. A
 * group is a base workload name ("W1", "W6" for W6-write/W6-read).
 *
 * @example
 * replaceResultsBlocks(text, new Map([["W1", "table..."]]))
 */
export function replaceResultsBlocks(text: string, blocks: ReadonlyMap<string, string>): string {
  let out = text;
  for (const [group, body] of blocks) {
    const { start, end } = resultsMarkers(group);
    const block = `${start}\n${body.trim()}\n${end}`;
    const i = out.indexOf(start);
    const j = out.indexOf(end);
    if (i >= 0 && j > i) out = out.slice(0, i) + block + out.slice(j + end.length);
    else out = `${out.trimEnd()}\n\n${block}\n`;
  }
  return out;
}
