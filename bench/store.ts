/**
 * The store workloads W1-W5 (BENCH.md), for segstore and its peers, one
 * case per workload and store. Run by scripts/bench.mjs through the child
 * protocol of harness.ts; by hand:
 *
 *   node dist/bench/store.js --list
 *   node dist/bench/store.js --case W1/lmdb --dir .bench-data/x --quick
 *
 * What is timed:
 *   W1, W2  from the first put to the return of the last durable commit
 *           (open and close are outside; disk_mb is measured after close).
 *   W3      the loop of n gets in random order, in a process that has just
 *           opened the store (keys regenerated before the clock starts);
 *           every get must find its value, or the run fails.
 *   W4      n transactions of one put each; p50/p99 are per commit.
 *   W5      ms from the orchestrator's spawn of this process to the first
 *           get answered: runtime start, module loading, open, one get.
 *
 * Each store is loaded lazily (its module imported only in the case that
 * uses it), so a W5 process loads nothing but its own store.
 */
import {
  benchLine, benchMain, diskUsageMb, epochMs, keyAt, makeKeys, makeValues, MB, nowMs, peakRssMb, percentile,
  shuffledOrder, bytesEqual, valueAt,
  type BenchCase, type BenchLine, type CaseContext, type PeerModule, type PeerStore, type Runtime,
} from "./harness.ts";

// ---------------------------------------------------------------------------
// Sizes (BENCH.md), and the smaller ones of --quick.

/** One bulk-load shape: n puts of value_bytes, a durable commit every `batch` puts. */
interface LoadShape {
  n: number;
  nQuick: number;
  valueBytes: number;
  batch: number;
}

/** W1: 200,000 puts of 100 B, a commit every 1,000. W3 and W5 read the store it leaves. */
const W1_SHAPE: LoadShape = { n: 200_000, nQuick: 20_000, valueBytes: 100, batch: 1_000 };
/** W2: 50,000 puts of 4 KiB, a commit every 1,000. */
const W2_SHAPE: LoadShape = { n: 50_000, nQuick: 5_000, valueBytes: 4096, batch: 1_000 };
/** W4: 2,000 transactions of one 100 B put. */
const W4_SHAPE: LoadShape = { n: 2_000, nQuick: 200, valueBytes: 100, batch: 1 };

function countOf(shape: LoadShape, ctx: CaseContext): number {
  return ctx.quick ? shape.nQuick : shape.n;
}

// ---------------------------------------------------------------------------
// The stores.

/** How a store takes part: which peer module, where, which get. */
interface StoreEntry {
  load(): Promise<PeerModule>;
  /** The runtimes it is measured in (a subset of what the peer supports). */
  runtimes: readonly Runtime[];
  /** The workloads it takes part in. */
  workloads: readonly string[];
  /** Which point get W3/W5 use. */
  gets: "sync" | "async";
}

const ALL_WORKLOADS = ["W1", "W2", "W3", "W4", "W5"] as const;

/**
 * lmdb and classic-level run their prebuilt addons under Deno as well, but
 * BENCH.md compares them under Node and gives Deno runs Deno KV as the peer:
 * measuring both in both runtimes would double a run on a shared machine for
 * little. Add "deno" to their runtimes to see them there.
 */
const STORES: Record<string, StoreEntry> = {
  segstore: {
    load: () => import("./peers/segstore.ts").then((m) => m.peer, (e: unknown) => {
      throw new Error(`segstore cannot be benchmarked yet: its entry point mod.ts does not load (${(e as Error).message ?? e})`);
    }),
    runtimes: ["node", "deno"],
    workloads: ALL_WORKLOADS,
    gets: "sync",
  },
  lmdb: { load: () => import("./peers/lmdb.ts").then((m) => m.peer), runtimes: ["node"], workloads: ALL_WORKLOADS, gets: "sync" },
  "classic-level": {
    load: () => import("./peers/classic-level.ts").then((m) => m.peer), runtimes: ["node"], workloads: ALL_WORKLOADS, gets: "sync",
  },
  /** classic-level again, reading with `await get` (BENCH.md W3's second line). */
  "classic-level-async": {
    load: () => import("./peers/classic-level.ts").then((m) => m.peer), runtimes: ["node"], workloads: ["W3"], gets: "async",
  },
  denokv: { load: () => import("./peers/denokv.ts").then((m) => m.peer), runtimes: ["deno"], workloads: ALL_WORKLOADS, gets: "async" },
};

// ---------------------------------------------------------------------------
// The workloads.

/** Puts `n` keys of `valueBytes` with a durable commit every `batch`; returns the time of the puts and commits. */
async function loadStore(store: PeerStore, n: number, valueBytes: number, batch: number, latencies?: number[]): Promise<number> {
  const keys = makeKeys(n);
  const values = makeValues(n, valueBytes);
  const started = nowMs();
  for (let start = 0; start < n; start += batch) {
    const t = latencies ? nowMs() : 0;
    const pending = store.writeBatch(keys, values, start, Math.min(n, start + batch));
    if (pending !== undefined) await pending;
    if (latencies) latencies.push(nowMs() - t);
  }
  return nowMs() - started;
}

/** W1, W2, W4: a bulk load (or W4's one-put transactions) into a fresh store. */
async function runLoad(workload: string, storeName: string, shape: LoadShape, ctx: CaseContext): Promise<BenchLine> {
  const n = countOf(shape, ctx);
  const peer = await STORES[storeName]!.load();
  const store = await peer.openPeer(ctx.dir, { create: true });
  const latencies: number[] | undefined = shape.batch === 1 ? [] : undefined;
  const elapsed = await loadStore(store, n, shape.valueBytes, shape.batch, latencies);
  const note = store.note;
  await store.close();
  latencies?.sort((a, b) => a - b);
  return benchLine({
    workload, store: storeName, n, value_bytes: shape.valueBytes,
    ops_per_s: n / (elapsed / 1000),
    mb_per_s: (n * shape.valueBytes) / MB / (elapsed / 1000),
    peak_rss_mb: peakRssMb(), disk_mb: diskUsageMb(ctx.dir), durable: true,
    p50_ms: latencies ? percentile(latencies, 50) : null,
    p99_ms: latencies ? percentile(latencies, 99) : null,
    note,
  });
}

/** Prepares W3/W5: the W1 store, loaded once (untimed) into the case directory. */
async function prepareW1Store(storeName: string, ctx: CaseContext): Promise<void> {
  const peer = await STORES[storeName]!.load();
  const store = await peer.openPeer(ctx.dir, { create: true });
  await loadStore(store, countOf(W1_SHAPE, ctx), W1_SHAPE.valueBytes, W1_SHAPE.batch);
  await store.close();
}

/** W3: a fresh process opens the W1 store and gets every key once, in random order. */
async function runRandomGets(storeName: string, ctx: CaseContext): Promise<BenchLine> {
  const n = countOf(W1_SHAPE, ctx);
  const entry = STORES[storeName]!;
  const peer = await entry.load();
  const store = await peer.openPeer(ctx.dir, { create: false });
  const keys = makeKeys(n);
  const order = shuffledOrder(n);
  let found = 0;
  let elapsed: number;
  if (entry.gets === "sync") {
    if (store.get === undefined) throw new Error(`W3: ${storeName} has no synchronous get`);
    const started = nowMs();
    for (let i = 0; i < n; i++) if (store.get(keys[order[i]!]!) !== undefined) found++;
    elapsed = nowMs() - started;
  } else {
    if (store.getAsync === undefined) throw new Error(`W3: ${storeName} has no asynchronous get`);
    const started = nowMs();
    for (let i = 0; i < n; i++) if ((await store.getAsync(keys[order[i]!]!)) !== undefined) found++;
    elapsed = nowMs() - started;
  }
  // The figures count only if every get answered, with the right bytes.
  if (found !== n) throw new Error(`W3: ${storeName} found ${found} of ${n} keys in ${ctx.dir}`);
  const probe = Math.floor(n / 3);
  const value = entry.gets === "sync" ? store.get!(keys[probe]!) : await store.getAsync!(keys[probe]!);
  if (value === undefined || !bytesEqual(value, valueAt(probe, W1_SHAPE.valueBytes))) {
    throw new Error(`W3: ${storeName} returned wrong bytes for key ${probe} in ${ctx.dir}`);
  }
  const note = store.note;
  await store.close();
  return benchLine({
    workload: "W3", store: storeName, n, value_bytes: W1_SHAPE.valueBytes,
    ops_per_s: n / (elapsed / 1000), mb_per_s: (n * W1_SHAPE.valueBytes) / MB / (elapsed / 1000),
    peak_rss_mb: peakRssMb(), disk_mb: diskUsageMb(ctx.dir), durable: true,
    note: `${entry.gets === "sync" ? "synchronous get" : "await get"}; ${note}`,
  });
}

/** W5: from process spawn to the first get answered on the W1 store; and index bytes per key. */
async function runOpen(storeName: string, ctx: CaseContext): Promise<BenchLine> {
  const n = countOf(W1_SHAPE, ctx);
  const probe = Math.floor(n / 2);
  const key = keyAt(probe);
  const entry = STORES[storeName]!;
  const peer = await entry.load();
  const store = await peer.openPeer(ctx.dir, { create: false });
  const value = entry.gets === "sync" ? store.get!(key) : await store.getAsync!(key);
  const ms = epochMs() - ctx.spawnEpochMs;
  if (value === undefined || !bytesEqual(value, valueAt(probe, W1_SHAPE.valueBytes))) {
    throw new Error(`W5: ${storeName} did not return key ${probe}'s value from ${ctx.dir}`);
  }
  const index = store.indexStats?.();
  const note = store.note;
  await store.close();
  return benchLine({
    workload: "W5", store: storeName, n, value_bytes: W1_SHAPE.valueBytes, ms,
    bytes_per_key: index === undefined ? null : index.indexBytes / (index.keys ?? n),
    peak_rss_mb: peakRssMb(), disk_mb: diskUsageMb(ctx.dir), durable: true,
    note: `ms from spawn to first get (runtime start, imports, open, get); ${note}`,
  });
}

/** The case of `workload` on `storeName`. */
function caseFor(workload: string, storeName: string): BenchCase {
  const base = { workload, store: storeName, runtimes: STORES[storeName]!.runtimes };
  switch (workload) {
    case "W1": return { ...base, run: (ctx) => runLoad("W1", storeName, W1_SHAPE, ctx) };
    case "W2": return { ...base, run: (ctx) => runLoad("W2", storeName, W2_SHAPE, ctx) };
    case "W3": return { ...base, prepare: (ctx) => prepareW1Store(storeName, ctx), run: (ctx) => runRandomGets(storeName, ctx) };
    case "W4": return { ...base, run: (ctx) => runLoad("W4", storeName, W4_SHAPE, ctx) };
    case "W5": return { ...base, prepare: (ctx) => prepareW1Store(storeName, ctx), run: (ctx) => runOpen(storeName, ctx) };
    default: throw new Error(`store bench: no workload ${workload}`);
  }
}

/** Every case of this file: each store in each workload it takes part in. */
const STORE_CASES: readonly BenchCase[] = ALL_WORKLOADS.flatMap((w) =>
  Object.keys(STORES).filter((s) => STORES[s]!.workloads.includes(w)).map((s) => caseFor(w, s)));

await benchMain(STORE_CASES);
