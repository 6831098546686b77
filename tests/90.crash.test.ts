/**
 * Power-loss enumeration: a scripted workload (puts, overwrites, deletes,
 * blobs put, replaced and deleted, commits, segment rolls, rollbacks,
 * automatic checkpoints, automatic and explicit compaction, close and
 * reopen) runs on the faulty adapter once to count its mutating operations;
 * then, for EVERY operation N, it runs again on a fresh FaultyFs that loses
 * power at N, and what each crash mode leaves (drop, torn, keep, zeros,
 * mixed; directory entries durable, or mixed) is opened and checked against
 * the model of tests/_support/torture-model.ts (every acknowledged commit
 * whole, the one in flight whole or absent, nothing else) and by
 * store.check(); then the store must take a further commit and reopen. A
 * second walk loses power again during the recovery itself. Crash points
 * that leave the same disk with the same model are checked once.
 *
 * Each failure prints the FaultyFs and crash() call that replays it. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { FaultyFs, type CrashOptions, type OpKind } from "../adapters/faulty.ts";
import { Store, type OpenOptions } from "../src/store.ts";
import { NotFoundError, StoreFormatError } from "../src/format.ts";
import { crc32 } from "../src/wasm.ts";
import { CommitModel, observeStore, observeStoreWithBlobs, TrackedStore } from "./_support/torture-model.ts";

const ROOT = "/r";
const STORE = "/r/store";
/**
 * Small limits so a short workload rolls segments (1 KiB, the smallest
 * allowed), checkpoints automatically and compacts automatically.
 */
const OPTIONS: OpenOptions = { maxSegmentSize: 1024, checkpointBytes: 2048 };
/** Seed of every FaultyFs here; torn prefixes and mixed modes draw from it (per crash point, seed + N). */
const SEED = 90;

/** The crash variants each crash point is tried with. */
const VARIANTS: CrashOptions[] = [
  { mode: "drop" },
  { mode: "torn" },
  { mode: "keep" },
  { mode: "zeros" },
  { mode: "mixed" },
  { mode: "mixed", entries: "mixed" },
];

/**
 * The operations that change the disk during recovery. Unlike the "mutations" class it leaves out `open`, which
 * recovery does mostly to read; its one create (segment 0 of an empty store) is followed by a write and syncs.
 */
const RECOVERY_WRITES: OpKind[] = ["write", "truncate", "datasync", "sync", "mkdir", "rename", "unlink", "rmdir", "syncDir"];

/** Crashed disks walked per distinct recovery path (sequence of recovery writes). */
const DISKS_PER_RECOVERY_PATH = 2;

/** How far the workload got: the test needs to know whether the store had been created. */
interface Progress {
  created: boolean;
  /** fs.opCount at the start of each phase, for the coverage checks. */
  phases: Map<string, number>;
}

function freshDisk(seed = SEED): FaultyFs {
  const fs = new FaultyFs({ seed });
  fs.mkdirp(ROOT);
  return fs;
}

/**
 * The scripted workload. Every call goes through TrackedStore, so the model
 * knows what was acknowledged and what was in flight whenever it throws.
 */
async function workload(fs: FaultyFs, model: CommitModel, progress: Progress): Promise<void> {
  const phase = (name: string) => progress.phases.set(name, fs.opCount);
  phase("create");
  const t = new TrackedStore(Store.open(STORE, { fs, create: true, ...OPTIONS }), model);
  progress.created = true;

  phase("first commits");
  for (let n = 0; n < 6; n++) t.put(n, 40 + 10 * n);
  t.commit();
  t.put(0, 60, 1);
  t.put(1, 20, 1);
  t.delete(2);
  t.put(6, 100);
  t.commit();

  phase("blobs");
  await t.putBlob(30, 2500); // temp file, datasync; the commit renames it into blobs/1e/ and syncs the directories
  t.put(31, 10);
  t.commit();
  await t.putBlob(30, 1800, 1); // a blob replacing a blob: the old file goes after the commit
  await t.putBlob(32, 900);
  t.commit();
  t.put(30, 50, 2); // a value replacing a blob
  t.delete(32);
  t.commit();

  phase("roll");
  for (let n = 7; n < 13; n++) t.put(n, 300); // ~2 KiB: rolls twice inside one transaction
  t.commit();

  phase("rollback");
  t.put(13, 50);
  t.delete(0);
  t.rollback();
  for (let n = 14; n < 18; n++) t.put(n, 400); // rolls, then the rollback removes the new segment
  t.rollback();
  t.commit(); // empty: writes nothing

  phase("churn");
  // Overwrites leave old segments sparse; the log passes checkpointBytes, so
  // commits checkpoint and then compact automatically.
  for (let round = 1; round <= 6; round++) {
    for (let n = 0; n < 13; n += 1 + (round % 3)) t.put(n, 30 + 5 * round, round + 1);
    if (round % 2 === 0) t.delete(6 + round);
    t.commit();
  }

  phase("compact");
  t.delete(3);
  t.delete(4);
  t.commit();
  t.compact();

  phase("reopen");
  t.store.close();
  t.store = Store.open(STORE, { fs, ...OPTIONS });
  t.put(20, 10);
  t.put(7, 5, 9);
  t.commit();
  t.put(21, 700); // rolls
  t.delete(1);
  t.commit();

  phase("close");
  t.store.close();
}

/**
 * Opens what a crash left and checks it: open succeeds (or, when the crash
 * came before create returned, create succeeds), the model holds, and the
 * store takes a further commit and reopens with it (unless `further` is false:
 * the recovery walk, whose disks the main walk's checks resemble). Returns
 * the problem, or undefined.
 */
async function recoverAndCheck(disk: FaultyFs, model: CommitModel, created: boolean, further = true): Promise<string | undefined> {
  let store: Store;
  try {
    store = Store.open(STORE, { fs: disk, ...OPTIONS });
  } catch (e) {
    if (created || !(e instanceof StoreFormatError || e instanceof NotFoundError)) return `open failed: ${(e as Error).stack}`;
    try {
      store = Store.open(STORE, { fs: disk, create: true, ...OPTIONS });
    } catch (e2) {
      return `the store was never created, and create after the crash failed: ${(e2 as Error).stack}`;
    }
  }
  try {
    const observed = await observeStoreWithBlobs(store);
    const problem = model.verify(observed);
    if (problem !== undefined) return problem;
    const checkProblem = await storeCheck(store);
    if (checkProblem !== undefined) return `check: ${checkProblem}`;
    if (!further) return undefined;
    model.adopt(observed);
    const t = new TrackedStore(store, model, 7);
    t.put(100, 33);
    t.delete(0);
    t.commit();
    store.close();
    store = Store.open(STORE, { fs: disk, ...OPTIONS });
    const again = model.verify(await observeStoreWithBlobs(store));
    if (again !== undefined) return `after a further commit and reopen: ${again}`;
    return undefined;
  } catch (e) {
    return `after recovery: ${(e as Error).stack}`;
  } finally {
    store.close();
  }
}

/** store.check() (src/check.ts): the problems it finds, or undefined when the report is ok. */
async function storeCheck(store: Store): Promise<string | undefined> {
  const report = await store.check();
  if (report.ok) return undefined;
  return report.problems.slice(0, 3).map((p) => `${p.kind}: ${p.message}`).join("; ");
}

/** One crash point: the workload run to a power loss at mutation `n`, and the model as it stood then. */
interface CrashPoint {
  n: number;
  /** The disk at the power loss (pending writes intact): `clone().crash(...)` it per variant. */
  fs: FaultyFs;
  model: CommitModel;
  created: boolean;
}

/** Runs the workload to a power loss at mutation `n`. Throws if it failed otherwise or never got there. */
async function crashPoint(n: number): Promise<CrashPoint> {
  const fs = freshDisk();
  fs.addFault({ action: "powerloss", ops: "mutations", nth: n });
  const model = new CommitModel();
  const progress: Progress = { created: false, phases: new Map() };
  try {
    await workload(fs, model, progress);
  } catch (e) {
    if (!fs.powerLost) throw new Error(`the workload failed before the power loss at mutation ${n}: ${(e as Error).stack}`);
  }
  if (!fs.powerLost) throw new Error(`mutation ${n} was never reached`);
  return { n, fs, model, created: progress.created };
}

/** The model's state as a string: with a disk signature, the key of a check already done. */
function modelKey(model: CommitModel): string {
  const f = model.inflight;
  return `${model.txid}/${f === undefined ? "-" : f.kind === "commit" ? f.txid : "compact"}`;
}

/**
 * Names, sizes and CRCs of every file: equal signatures, equal disks for what recovery does. The config's
 * contents are left out: each run's store gets a random id, nothing else differs.
 */
function diskSignature(fs: FaultyFs): string {
  const files = [...fs.files()].map(([path, bytes]) => `${path}:${bytes.length}:${path.endsWith("/config") ? "" : crc32(bytes)}`);
  return files.join("\n") + "\n" + fs.directories().join("\n");
}

/** The workload once, without faults: its mutation count and the op log, for coverage checks. */
async function countRun(): Promise<{ fs: FaultyFs; mutations: number; progress: Progress; model: CommitModel }> {
  const fs = freshDisk();
  const model = new CommitModel();
  const progress: Progress = { created: false, phases: new Map() };
  await workload(fs, model, progress);
  return { fs, mutations: fs.countOps({ ops: "mutations" }), progress, model };
}

/** Fails with the failures grouped by kind (the problem's first line, numbers blanked): one example each, with its replay. */
function report(failures: { n: number; variant: string; problem: string; replay: string }[], covered: number): void {
  if (failures.length === 0) return;
  const groups = new Map<string, typeof failures>();
  for (const f of failures) {
    const kind = f.problem.split("\n")[0]!.replace(/\d+/g, "#").slice(0, 160);
    groups.set(kind, [...(groups.get(kind) ?? []), f]);
  }
  const shown = [...groups.values()].map((g) =>
    `- ${g.length}× (mutations ${g.slice(0, 8).map((f) => f.n).join(", ")}${g.length > 8 ? ", ..." : ""}), e.g. mutation ${g[0]!.n}, ${g[0]!.variant}: ` +
    `${g[0]!.problem.split("\n").slice(0, 4).join("\n    ")}\n  replay: ${g[0]!.replay}`
  );
  assert.unreachable(`${failures.length} of ${covered} crash points broke the model:\n${shown.join("\n")}`);
}

test("the workload covers blobs, rolls, rollbacks, automatic checkpoints, automatic and explicit compaction, reopen", async () => {
  const { fs, mutations, progress, model } = await countRun();
  const phase = (name: string) => progress.phases.get(name)!;
  const logBetween = (from: string, to: string) => fs.log.filter((e) => e.n > phase(from) && e.n <= phase(to));
  const isSegment = (p: string) => /\/data\/\d+\/\d+$/.test(p);
  const segmentCreates = fs.log.filter((e) => e.op === "open" && isSegment(e.path)).length;
  assert.ok(segmentCreates >= 5, `segments opened: ${segmentCreates}`);
  // Blobs: renamed into blobs/<xx>/ at commit, and the replaced ones unlinked after it.
  assert.ok(logBetween("blobs", "roll").some((e) => e.op === "rename" && e.to !== undefined && /\/blobs\/[0-9a-f]{2}\//.test(e.to)), "a blob renamed into place");
  assert.ok(logBetween("blobs", "roll").some((e) => e.op === "unlink" && /\/blobs\/[0-9a-f]{2}\//.test(e.path)), "a replaced blob file removed");
  // The rollback phase creates a segment and unlinks it again.
  assert.ok(logBetween("rollback", "churn").some((e) => e.op === "unlink" && isSegment(e.path)), "rollback removes a rolled segment");
  // Commits checkpoint (index.N renamed into place) and compact (old segments unlinked) without compact() being called.
  const isCheckpoint = (e: { op: string; to?: string }) => e.op === "rename" && e.to !== undefined && /\/index\.\d+$/.test(e.to);
  assert.ok(logBetween("first commits", "compact").some(isCheckpoint), "an automatic checkpoint");
  assert.ok(logBetween("churn", "compact").some((e) => e.op === "unlink" && isSegment(e.path)), "automatic compaction deletes a segment");
  assert.ok(logBetween("compact", "reopen").some((e) => e.op === "unlink" && /\/(index|hints)\.\d+$/.test(e.path)), "compact() replaces the checkpoint");
  assert.ok(logBetween("compact", "reopen").some((e) => e.op === "unlink" && isSegment(e.path)), "compact() deletes a segment");
  assert.ok(model.commits >= 12, `commits: ${model.commits}`);
  assert.ok(mutations > 100, `mutations: ${mutations}`);
  console.log(`  workload: ${mutations} mutating operations, ${model.commits} commits, ${segmentCreates} segment files opened`);
});


// ---------------------------------------------------------------------------
// The engine bugs the walk found, each pinned by a direct test

test("create finishes over what a create cut short before its config left (README, lock, empty data/)", () => {
  const fs = freshDisk();
  fs.mkdirp(`${STORE}/data`);
  fs.writeFile(`${STORE}/README`, new TextEncoder().encode("This is a segstore store\n"));
  fs.writeFile(`${STORE}/lock`, new Uint8Array(0));
  fs.writeFile(`${STORE}/config.tmp`, new Uint8Array(3));
  const store = Store.open(STORE, { fs, create: true });
  const t = new TrackedStore(store, new CommitModel());
  t.put(1, 10);
  t.commit();
  store.close();
  assert.is(Store.open(STORE, { fs }).stats().keys, 1);
  // Anything else in the directory is not ours: create still refuses it.
  const other = freshDisk();
  other.mkdirp(`${STORE}/data`);
  other.writeFile(`${STORE}/lock`, new Uint8Array(0));
  other.writeFile(`${STORE}/notes.txt`, new Uint8Array(1));
  assert.throws(() => Store.open(STORE, { fs: other, create: true }), (e: unknown) => e instanceof StoreFormatError && /not empty/.test((e as Error).message));
});

test("rollback across segment rolls makes the removal of the rolled segments durable before writing on", () => {
  const fs = freshDisk();
  const store = Store.open(STORE, { fs, create: true, ...OPTIONS });
  const t = new TrackedStore(store, new CommitModel());
  t.put(1, 100);
  t.commit();
  for (let n = 2; n < 8; n++) t.put(n, 400); // rolls twice: the first new segment's name is synced by the second roll
  t.rollback();
  const after = fs.crash(); // strict: only synced names survive
  const segments = [...after.files().keys()].filter((p) => /\/data\/\d+\/\d+$/.test(p));
  assert.equal(segments, [`${STORE}/data/0/0`], "only the committed segment survives the crash");
  const reopened = Store.open(STORE, { fs: after, ...OPTIONS });
  assert.is(reopened.stats().keys, 1);
  reopened.close();
});

test("replay over a checkpoint whose hints name segments compaction deleted since", () => {
  const fs = freshDisk();
  // No automatic checkpoint: the explicit one below is the one open finds.
  const store = Store.open(STORE, { fs, create: true, maxSegmentSize: 1024, checkpointBytes: 2 ** 40 });
  const model = new CommitModel();
  const t = new TrackedStore(store, model);
  for (let n = 0; n < 8; n++) t.put(n, 200);
  t.commit();
  t.put(100, 10);
  t.commit();
  store.checkpoint();
  const segmentsAtCheckpoint = store.stats().segments;
  for (let n = 0; n < 8; n++) t.put(n, 20, 1); // the old segments become garbage; this commit compacts them away
  t.commit();
  assert.ok(store.stats().segments < segmentsAtCheckpoint, `compaction deleted segments (${store.stats().segments} of ${segmentsAtCheckpoint})`);
  const killed = fs.crash({ mode: "keep", entries: "current" }); // kill -9: no close, no new checkpoint
  const reopened = Store.open(STORE, { fs: killed, maxSegmentSize: 1024 });
  assert.is(model.verify(observeStore(reopened)), undefined);
  reopened.close();
});

test("a DELETE that ends a segment before a roll counts in the segment's size (stats, hints, check)", async () => {
  const fs = freshDisk();
  const store = Store.open(STORE, { fs, create: true, maxSegmentSize: 1024 });
  const t = new TrackedStore(store, new CommitModel());
  t.put(1, 900); // segment 0: 8 + 941 + 17 = 966 bytes
  t.commit();
  t.put(1, 10, 1); // the overwrite's DELETE (45 bytes) still fits segment 0; the PUT rolls to segment 1
  t.commit();
  const fileBytes = [...fs.files()].filter(([p]) => /\/data\/\d+\/\d+$/.test(p)).reduce((sum, [, b]) => sum + b.length, 0);
  assert.is(store.stats().segments, 2);
  assert.is(store.stats().totalBytes, fileBytes);
  const report = await store.check();
  assert.ok(report.ok, JSON.stringify(report.problems));
  store.close();
});

test("a read-only open after a kill keeps the uncommitted tail on disk and its stats agree with the files (check is clean)", async () => {
  const fs = freshDisk();
  const store = Store.open(STORE, { fs, create: true, ...OPTIONS });
  const t = new TrackedStore(store, new CommitModel());
  t.put(1, 100);
  t.put(2, 100);
  t.commit();
  store.checkpoint(); // replay starts inside segment 0, from the stats hints.0 holds
  t.put(2, 20, 1);
  t.commit();
  t.put(1, 50, 1); // uncommitted: an overwrite's DELETE and a PUT, flushed by the roll below
  t.put(3, 900);
  store.internals(); // still open: the kill comes now
  const killed = fs.crash({ mode: "keep", entries: "current" });
  const reader = Store.open(STORE, { fs: killed, readOnly: true });
  const fileBytes = [...killed.files()].filter(([p]) => /\/data\/\d+\/\d+$/.test(p)).reduce((sum, [, b]) => sum + b.length, 0);
  assert.is(reader.stats().totalBytes, fileBytes);
  const report = await reader.check();
  assert.ok(report.ok, JSON.stringify(report.problems));
  assert.is(reader.stats().keys, 2);
  reader.close();
});

type Failure = { n: number; variant: string; problem: string; replay: string };

function variantName(v: CrashOptions): string {
  return `${v.mode}${v.entries ? `, entries ${v.entries}` : ""}`;
}

/**
 * The walk, once for both tests below: every crash point, each crash variant of it, and a power loss at every
 * write of the recovery that follows (on a few disks per distinct recovery path).
 */
interface WalkResult {
  mutations: number;
  ms: number;
  perVariant: Map<string, { checked: number; failures: Failure[] }>;
  recovery: { disks: number; paths: number; walked: number; points: number; failures: Failure[] };
}
let walked: WalkResult | undefined;

async function walk(): Promise<WalkResult> {
  if (walked !== undefined) return walked;
  const started = Date.now();
  const { mutations } = await countRun();
  const perVariant = new Map(VARIANTS.map((v) => [variantName(v), { checked: 0, failures: [] as Failure[] }]));
  const recovery = { disks: 0, paths: 0, walked: 0, points: 0, failures: [] as Failure[] };
  // Many crash points leave the same disk (power lost anywhere among one transaction's unsynced writes, in
  // "drop" mode): a disk and model already checked give the same answer, so each is checked once.
  const checked = new Set<string>();
  const recoveryDisks = new Set<string>();
  const recoveryPaths = new Map<string, number>();
  for (let n = 1; n <= mutations; n++) {
    const point = await crashPoint(n);
    for (const variant of VARIANTS) {
      const options: CrashOptions = { ...variant, seed: SEED + n };
      const disk = point.fs.clone().crash(options);
      const key = `${variantName(variant)}\n${modelKey(point.model)}\n${diskSignature(disk)}`;
      const result = perVariant.get(variantName(variant))!;
      if (checked.has(key)) continue;
      checked.add(key);
      result.checked++;
      const problem = await recoverAndCheck(disk, point.model.clone(), point.created);
      if (problem !== undefined) result.failures.push({ n, variant: variantName(variant), problem, replay: `${point.fs}; fs.crash(${JSON.stringify(options)})` });
    }
    if (point.created) await walkRecovery(point, recoveryDisks, recoveryPaths, recovery);
  }
  recovery.disks = recoveryDisks.size;
  recovery.paths = recoveryPaths.size;
  walked = { mutations, ms: Date.now() - started, perVariant, recovery };
  return walked;
}

/** Power loss at every write of the open that recovers `point` (crashed torn, or killed), then crash and check. */
async function walkRecovery(point: CrashPoint, disks: Set<string>, paths: Map<string, number>, out: WalkResult["recovery"]): Promise<void> {
  for (const first of [{ mode: "torn" }, { mode: "keep", entries: "current" }] as CrashOptions[]) {
    const crashed = point.fs.clone().crash({ ...first, seed: SEED + point.n });
    const signature = `${modelKey(point.model)}\n${diskSignature(crashed)}`;
    if (disks.has(signature)) continue;
    disks.add(signature);
    // Count the open's own writes on a copy (close() writes a checkpoint, which the main walk covers).
    const probe = crashed.clone();
    let recoveryOps: number;
    let path: string;
    try {
      const store = Store.open(STORE, { fs: probe, ...OPTIONS });
      recoveryOps = probe.countOps({ ops: RECOVERY_WRITES });
      path = probe.log.filter((e) => RECOVERY_WRITES.includes(e.op) && !e.path.endsWith("/lock")).map((e) => `${e.op} ${e.path}`).join(", ");
      store.close();
    } catch (e) {
      out.failures.push({ n: point.n, variant: variantName(first), problem: `recovery failed: ${(e as Error).stack}`, replay: `${point.fs}` });
      continue;
    }
    // Recoveries that take the same path (the same truncates, unlinks and syncs) differ only in the bytes kept;
    // a few disks per path cover it and keep the walk to seconds.
    const taken = paths.get(path) ?? 0;
    if (taken >= DISKS_PER_RECOVERY_PATH) continue;
    paths.set(path, taken + 1);
    out.walked++;
    for (let m = 1; m <= recoveryOps; m++) {
      const second: CrashOptions = { mode: m % 2 === 0 ? "drop" : "torn", seed: SEED + point.n + m };
      out.points++;
      const disk = crashed.clone();
      disk.addFault({ action: "powerloss", ops: RECOVERY_WRITES, nth: m });
      try {
        Store.open(STORE, { fs: disk, ...OPTIONS }).close();
      } catch {
        // the power loss
      }
      const problem = disk.powerLost ? await recoverAndCheck(disk.crash(second), point.model.clone(), true, false) : undefined;
      if (problem !== undefined) {
        out.failures.push({
          n: point.n, variant: `${variantName(first)}, then ${second.mode} at recovery write ${m}`, problem,
          replay: `${point.fs}; fs.crash(${JSON.stringify({ ...first, seed: SEED + point.n })}); ${disk}; crash(${JSON.stringify(second)})`,
        });
      }
    }
  }
}

test("power loss at every mutating operation, in every crash mode: acknowledged commits whole, in-flight all or nothing", async () => {
  const result = await walk();
  const failures: Failure[] = [];
  let checkedTotal = 0;
  for (const [name, r] of result.perVariant) {
    console.log(`  crash mode ${name}: ${result.mutations} crash points, ${r.checked} distinct disks recovered and checked, ${r.failures.length} failures`);
    failures.push(...r.failures);
    checkedTotal += r.checked;
  }
  console.log(`  ${result.mutations * VARIANTS.length} crash points covered (${result.mutations} × ${VARIANTS.length} modes), ${checkedTotal} recoveries checked, ${result.ms} ms (both walks)`);
  report(failures, result.mutations * VARIANTS.length);
});

test("power loss during recovery: at every write of the open that recovers a crash", async () => {
  const r = (await walk()).recovery;
  console.log(`  recovery: ${r.disks} distinct crashed disks, ${r.paths} distinct recovery paths, ${r.walked} walked, ${r.points} crash points inside them, ${r.failures.length} failures`);
  assert.ok(r.walked > 10, `recoveries walked: ${r.walked}`);
  report(r.failures, r.points);
});

test.run();
