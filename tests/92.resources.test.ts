/**
 * Resource faults: ENOSPC and EIO injected (faulty adapter) at every
 * occurrence of every kind of filesystem call a workload makes (open, read,
 * write, size, truncate, datasync, sync, mkdir, readdir, rename, unlink,
 * stat, syncDir, lock), once each; then the store must follow the state
 * machine atop src/store.ts: the error is typed, reads still work and show
 * the last commit, and either writes work again at once or (after a failed
 * sync) they are refused with StateError EFAILED until a reopen; after
 * close and reopen the model of tests/_support/torture-model.ts holds and
 * store.check() is clean. A disk that stays full (ENOSPC on every write
 * from some point on) is tried too.
 *
 * And file handles: a store of hundreds of segments, read across all of
 * them, replayed and checked, never holds more than MAX_OPEN_SEGMENTS
 * segment files open (plus the head the writer appends to), counted by a
 * wrapping adapter around the runtime's and the faulty one.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { FaultyFs, type OpKind } from "../adapters/faulty.ts";
import { Store, type OpenOptions } from "../src/store.ts";
import { SegstoreError, StateError } from "../src/format.ts";
import { FsError, type File, type FileSystem } from "../src/fs.ts";
import { MAX_OPEN_SEGMENTS } from "../src/segments.ts";
import { blobDigest, CommitModel, keyId, observeStore, observeStoreWithBlobs, TrackedStore, valueBytes } from "./_support/torture-model.ts";
import { crc32 } from "../src/wasm.ts";
import { adapterCases } from "./_support/adapters.ts";

const STORE = "/r/store";
/** Small segments and checkpoint bound: the workload rolls, checkpoints and compacts. */
const OPTIONS: OpenOptions = { maxSegmentSize: 1024, checkpointBytes: 2048 };
/** The kinds of call faulted; close (never fails in the model) and unlock are left out. */
const KINDS: OpKind[] = ["open", "read", "write", "size", "truncate", "datasync", "sync", "mkdir", "readdir", "rename", "unlink", "stat", "syncDir", "lock"];
/**
 * Most occurrences of one kind walked; past it, evenly spread ones. Reads and stats run to hundreds per
 * workload, and their failures all look alike to the store (a read error is reported, nothing changes).
 */
const OCCURRENCES_PER_KIND_MAX = 60;

/** A blob source from bytes, in chunks. */
async function* chunks(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  for (let i = 0; i < bytes.length; i += 700) yield bytes.subarray(i, Math.min(bytes.length, i + 700));
}

/**
 * The workload as steps, so a failure is known by the step it hit. Each
 * step goes through TrackedStore (the model hears of a commit before it
 * starts). `state.t` is undefined until create returns.
 */
interface WorkState {
  fs: FaultyFs;
  model: CommitModel;
  t?: TrackedStore;
}

function steps(): { name: string; run: (s: WorkState) => Promise<void> | void }[] {
  const out: { name: string; run: (s: WorkState) => Promise<void> | void }[] = [];
  out.push({ name: "create", run: (s) => void (s.t = new TrackedStore(Store.open(STORE, { fs: s.fs, create: true, ...OPTIONS }), s.model)) });
  out.push({ name: "puts", run: (s) => { for (let n = 0; n < 6; n++) s.t!.put(n, 60 + 30 * n); } });
  out.push({ name: "commit", run: (s) => void s.t!.commit() });
  out.push({ name: "blob", run: async (s) => {
    const bytes = valueBytes(5, 1000, 3000);
    s.t!.txn.set(20, blobDigest(bytes.length, crc32(bytes)));
    await s.t!.store.putBlob(keyId(20), chunks(bytes));
  } });
  out.push({ name: "overwrite and delete", run: (s) => { s.t!.put(0, 500, 1); s.t!.delete(1); s.t!.put(7, 300); } });
  out.push({ name: "commit", run: (s) => void s.t!.commit() });
  out.push({ name: "rollback", run: (s) => { s.t!.put(8, 900); s.t!.put(9, 900); s.t!.rollback(); } });
  for (let round = 1; round <= 4; round++) {
    out.push({ name: `churn ${round}`, run: (s) => { for (let n = 0; n < 8; n += 1 + (round % 2)) s.t!.put(n, 100 + 20 * round, round + 1); } });
    out.push({ name: "commit", run: (s) => void s.t!.commit() });
  }
  out.push({ name: "reads", run: (s) => {
    for (let n = 0; n < 10; n++) s.t!.store.get(keyId(n));
    s.t!.store.getMany([0, 2, 4, 6].map(keyId));
  } });
  out.push({ name: "compact", run: (s) => void s.t!.compact() });
  out.push({ name: "blob delete", run: (s) => void s.t!.delete(20) });
  out.push({ name: "commit", run: (s) => void s.t!.commit() });
  out.push({ name: "close", run: (s) => void s.t!.store.close() });
  out.push({ name: "reopen", run: (s) => void (s.t!.store = Store.open(STORE, { fs: s.fs, ...OPTIONS })) });
  out.push({ name: "after reopen", run: (s) => { s.t!.put(30, 40); s.t!.commit(); s.t!.store.close(); } });
  return out;
}

function freshDisk(): FaultyFs {
  const fs = new FaultyFs({ seed: 92 });
  fs.mkdirp("/r");
  return fs;
}

/** The workload without faults: how often it makes each kind of call. */
async function countRun(): Promise<Map<OpKind, number>> {
  const s: WorkState = { fs: freshDisk(), model: new CommitModel() };
  for (const step of steps()) await step.run(s);
  return new Map(KINDS.map((k) => [k, s.fs.countOps({ ops: [k], path: "/r/**" })]));
}

/** Occurrences to fault: all of them up to the cap, else evenly spread, always the first and the last. */
function occurrences(count: number): number[] {
  if (count <= OCCURRENCES_PER_KIND_MAX) return Array.from({ length: count }, (_, i) => i + 1);
  const out = new Set<number>();
  for (let i = 0; i < OCCURRENCES_PER_KIND_MAX; i++) out.add(1 + Math.round((i * (count - 1)) / (OCCURRENCES_PER_KIND_MAX - 1)));
  return [...out];
}

/** A typed error: segstore's classes or the adapter's FsError; never an internal assertion, a TypeError or a RangeError. */
function typedError(e: unknown): boolean {
  return e instanceof SegstoreError || e instanceof FsError;
}

/**
 * Runs the workload with one fault; after the first error, follows the
 * state machine and checks what it promises. Returns the problem, or undefined.
 */
async function faultRun(kind: OpKind, action: "EIO" | "ENOSPC", nth: number, times = 1): Promise<{ problem?: string; failedStep?: string; failedState?: boolean }> {
  const fs = freshDisk();
  const s: WorkState = { fs, model: new CommitModel() };
  const fault = fs.addFault({ action, ops: [kind], path: "/r/**", nth, times, ...(kind === "write" ? { prefix: "random" as const } : {}) });
  let failedStep: string | undefined;
  let failure: unknown;
  const all = steps();
  let at = 0;
  for (; at < all.length; at++) {
    try {
      await all[at]!.run(s);
    } catch (e) {
      failedStep = all[at]!.name;
      failure = e;
      break;
    }
  }
  if (fault.fired === 0) return { problem: "the fault never fired" };
  // A fault the store absorbed (a failed checkpoint or segment delete after a durable commit is retried later)
  // surfaces nowhere: the workload ran to its end, and the reopen below must still find every commit.
  if (failedStep !== undefined && !typedError(failure)) return { problem: `step "${failedStep}" threw an untyped error: ${(failure as Error).stack}`, failedStep };
  if (times === Infinity) fs.removeFault(); // the disk has room again
  const store = s.t?.store;
  let failedState = false;
  if (store !== undefined && !store.closed) {
    // The user's natural response to an error mid-transaction: roll back. Then reads show the last commit.
    try {
      store.rollback();
    } catch (e) {
      if (!typedError(e)) return { problem: `rollback after the error threw an untyped error: ${(e as Error).stack}`, failedStep };
    }
    s.t!.txn.clear();
    try {
      const seen = await observeStoreWithBlobs(store);
      const inMemory = new CommitModel();
      inMemory.content = s.model.content;
      inMemory.txid = s.model.txid;
      // An in-flight compact() may have committed steps; an in-flight commit, if rolled back, is not there.
      inMemory.inflight = s.model.inflight?.kind === "compact" ? s.model.inflight : undefined;
      const problem = inMemory.verify(seen);
      if (problem !== undefined) return { problem: `after the error, before reopen: ${problem}`, failedStep };
    } catch (e) {
      return { problem: `reads fail after the error: ${(e as Error).stack}`, failedStep };
    }
    // Writes: refused with EFAILED after a failed sync, else they work at once.
    const inflightBefore = s.model.inflight;
    try {
      s.t!.put(40, 77);
      s.t!.commit();
    } catch (e) {
      if (!(e instanceof StateError && e.code === "EFAILED")) {
        return { problem: `a write after the error failed, and not with StateError EFAILED: ${(e as Error).stack}`, failedStep };
      }
      failedState = true;
      s.t!.txn.clear();
      s.model.inflight = inflightBefore; // the refused commit never began
    }
    try {
      store.close();
    } catch (e) {
      if (!typedError(e)) return { problem: `close after the error threw an untyped error: ${(e as Error).stack}`, failedStep };
    }
  }
  // Reopen (with create when the create was what failed) and hold the store against the model.
  let reopened: Store;
  try {
    reopened = Store.open(STORE, { fs, create: s.t === undefined, ...OPTIONS });
  } catch (e) {
    return { problem: `reopen after the error failed: ${(e as Error).stack}`, failedStep };
  }
  try {
    const problem = s.model.verify(await observeStoreWithBlobs(reopened));
    if (problem !== undefined) return { problem: `after reopen: ${problem}`, failedStep, failedState };
    const report = await reopened.check();
    if (!report.ok) return { problem: `check after reopen: ${report.problems.slice(0, 3).map((p) => `${p.kind}: ${p.message}`).join("; ")}`, failedStep };
    return { failedStep, failedState };
  } finally {
    reopened.close();
  }
}

type Failure = { where: string; problem: string };

function report(failures: Failure[], total: number): void {
  if (failures.length === 0) return;
  const groups = new Map<string, Failure[]>();
  for (const f of failures) {
    const kind = f.problem.split("\n")[0]!.replace(/\d+/g, "#").slice(0, 140);
    groups.set(kind, [...(groups.get(kind) ?? []), f]);
  }
  const shown = [...groups.values()].map((g) => `- ${g.length}×, e.g. ${g[0]!.where}: ${g[0]!.problem.split("\n").slice(0, 4).join("\n    ")}`);
  assert.unreachable(`${failures.length} of ${total} fault points broke the promise:\n${shown.join("\n")}`);
}

for (const action of ["EIO", "ENOSPC"] as const) {
  test(`${action} at every occurrence of every kind of call: typed error, reads work, writes work or EFAILED until reopen, consistent after reopen`, async () => {
    const counts = await countRun();
    const failures: Failure[] = [];
    let points = 0;
    let failedStates = 0;
    const steps = new Set<string>();
    for (const kind of KINDS) {
      for (const nth of occurrences(counts.get(kind)!)) {
        points++;
        const r = await faultRun(kind, action, nth);
        if (r.failedStep) steps.add(r.failedStep);
        if (r.failedState) failedStates++;
        if (r.problem !== undefined) failures.push({ where: `${kind} #${nth} (fs.addFault({ action: "${action}", ops: ["${kind}"], path: "/r/**", nth: ${nth} }))`, problem: r.problem });
      }
    }
    const kinds = KINDS.filter((k) => counts.get(k)! > 0);
    console.log(`  ${action}: ${points} fault points over ${kinds.length} kinds of call (${kinds.map((k) => `${k} ${counts.get(k)}`).join(", ")}); ` +
      `${failedStates} left the store refusing writes until reopen; failing steps: ${[...steps].join(", ")}; ${failures.length} failures`);
    assert.ok(failedStates > 0, "some faults (failed syncs) put the store in the failed state");
    report(failures, points);
  });
}

test("a disk that stays full: ENOSPC on every write from some point on, then room again", async () => {
  const counts = await countRun();
  const failures: Failure[] = [];
  const points = occurrences(counts.get("write")!);
  for (const nth of points) {
    const r = await faultRun("write", "ENOSPC", nth, Infinity);
    if (r.problem !== undefined) failures.push({ where: `write #${nth} onwards`, problem: r.problem });
  }
  console.log(`  full disk from ${points.length} points on: ${failures.length} failures`);
  report(failures, points.length);
});

// ---------------------------------------------------------------------------
// File handles

/** A FileSystem that counts the files open through it (segment files apart), and the most at once. */
class CountingFs implements FileSystem {
  readonly name: string;
  open_ = 0;
  segmentsOpen = 0;
  segmentsOpenMax = 0;
  constructor(readonly inner: FileSystem) {
    this.name = inner.name;
  }
  open(path: string, mode: "r" | "r+" | "w+" | "wx+"): File {
    const file = this.inner.open(path, mode);
    const segment = /\/data\/\d+\/\d+$/.test(path);
    this.open_++;
    if (segment) this.segmentsOpenMax = Math.max(this.segmentsOpenMax, ++this.segmentsOpen);
    let closed = false;
    const counter = this;
    return {
      path: file.path,
      read: (b, p) => file.read(b, p),
      write: (b, p) => file.write(b, p),
      writeAsync: (b, p) => file.writeAsync(b, p),
      size: () => file.size(),
      truncate: (n) => file.truncate(n),
      datasync: () => file.datasync(),
      datasyncAsync: () => file.datasyncAsync(),
      sync: () => file.sync(),
      lock: (m, w) => file.lock(m, w),
      unlock: () => file.unlock(),
      close() {
        if (!closed) {
          closed = true;
          counter.open_--;
          if (segment) counter.segmentsOpen--;
        }
        file.close();
      },
    };
  }
  mkdir(path: string): void { this.inner.mkdir(path); }
  readdir(path: string): string[] { return this.inner.readdir(path); }
  rename(from: string, to: string): void { this.inner.rename(from, to); }
  unlink(path: string): void { this.inner.unlink(path); }
  rmdir(path: string): void { this.inner.rmdir(path); }
  stat(path: string) { return this.inner.stat(path); }
  syncDir(path: string): void { this.inner.syncDir(path); }
  resolve(path: string): string { return this.inner.resolve(path); }
}

/** Segments the handle test builds: several times MAX_OPEN_SEGMENTS. */
const MANY_SEGMENTS = 5 * MAX_OPEN_SEGMENTS;

for (const kind of ["runtime", "faulty"] as const) {
  test(`${kind} fs: ${MANY_SEGMENTS}+ segments read, replayed and compacted with at most MAX_OPEN_SEGMENTS read handles (+ the head, + the next during a roll), check within its own bound`, async () => {
    const cases = adapterCases({ prefix: "segstore-handles-" });
    const c = kind === "runtime" ? cases[0]! : cases[1]!;
    try {
      const fs = new CountingFs(c.fs);
      const path = `${c.root}/store`;
      // The read handles' LRU, plus the head the writer appends to, plus (for a moment, during a roll) the next
      // head, created before the old one is closed so a failed create leaves the writer on the old head.
      const bound = MAX_OPEN_SEGMENTS + 2;
      let store = Store.open(path, { fs, create: true, maxSegmentSize: 1024, checkpointBytes: 2 ** 40, autoCompact: false });
      const model = new CommitModel();
      const t = new TrackedStore(store, model);
      // One ~900-byte value per segment: each put rolls.
      for (let n = 0; n < MANY_SEGMENTS; n++) {
        t.put(n, 900);
        if (n % 16 === 15) t.commit();
      }
      t.commit();
      assert.ok(store.stats().segments >= MANY_SEGMENTS, `segments: ${store.stats().segments}`);
      // Reads across every segment, in an order that defeats the LRU.
      for (let round = 0; round < 2; round++) {
        for (let n = 0; n < MANY_SEGMENTS; n++) store.get(keyId((n * 37) % MANY_SEGMENTS));
      }
      store.getMany(Array.from({ length: MANY_SEGMENTS }, (_, n) => keyId(MANY_SEGMENTS - 1 - n)));
      // No roll while reading: the read handles stay within MAX_OPEN_SEGMENTS, the head beside them.
      assert.ok(fs.segmentsOpenMax <= MAX_OPEN_SEGMENTS + 1, `segment files open at once while reading: ${fs.segmentsOpenMax} > ${MAX_OPEN_SEGMENTS + 1}`);
      const whileReading = fs.segmentsOpenMax;
      // A full replay at open (no checkpoint: the store is killed, not closed, so open replays every segment).
      store.internals();
      const problem = model.verify(observeStore(store));
      assert.is(problem, undefined);
      // check reads through handle sets of its own (bounded the same way) while the store keeps its handles.
      const beforeCheck = fs.segmentsOpenMax;
      fs.segmentsOpenMax = fs.segmentsOpen;
      const report = await store.check();
      assert.ok(report.ok, JSON.stringify(report.problems.slice(0, 3)));
      const duringCheck = fs.segmentsOpenMax;
      assert.ok(duringCheck <= bound + MAX_OPEN_SEGMENTS, `segment files open at once during check: ${duringCheck} > ${bound + MAX_OPEN_SEGMENTS}`);
      fs.segmentsOpenMax = beforeCheck;
      // Half the keys deleted: compaction rewrites and deletes hundreds of segments.
      for (let n = 0; n < MANY_SEGMENTS; n += 2) t.delete(n);
      t.commit();
      t.compact();
      assert.ok(fs.segmentsOpenMax <= bound, `segment files open at once during compaction: ${fs.segmentsOpenMax} > ${bound}`);
      store.close();
      assert.is(fs.open_, 0, "close() closes every file");
      // Reopen without the checkpoint: every segment replayed.
      for (const name of fs.readdir(path)) if (/^(index|hints)\.\d+$/.test(name)) fs.unlink(`${path}/${name}`);
      store = Store.open(path, { fs, maxSegmentSize: 1024 });
      assert.is(model.verify(observeStore(store)), undefined);
      assert.ok(fs.segmentsOpenMax <= bound, `segment files open at once during replay: ${fs.segmentsOpenMax} > ${bound}`);
      store.close();
      console.log(`  ${kind}: ${MANY_SEGMENTS} segments, at most ${whileReading} segment files open at once while reading, ${fs.segmentsOpenMax} over the whole test (bound ${bound}), ${duringCheck} during check`);
    } finally {
      for (const x of cases) x.cleanup();
    }
  });
}

test.run();
