/**
 * check and repair (src/check.ts): every problem kind reported with where it
 * is, every row of the repair table, seeded random corruption of segments,
 * index checkpoints, hints and blob files (open or read gives IntegrityError
 * or the right data, never wrong data; check reports each; repair leaves a
 * store that opens, passes check and lists every id it could not save), and
 * power loss at every point of a repair. Runs on the runtime's filesystem
 * and on FaultyFs.
 */
import process from "node:process";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { createBLAKE3 } from "hash-wasm";
import { adapterCases, type AdapterCase } from "./_support/adapters.ts";
import { idHex, Store, type OpenOptions } from "../src/store.ts";
import { checkPath, walkSegment, type CheckProblem, type CheckReport } from "../src/check.ts";
import { checkPath as modCheckPath } from "../mod.ts";
import {
  COMMIT_RECORD_SIZE, IntegrityError, KEY_SIZE, RECORD_HEADER_SIZE, SEGMENT_MAGIC, StateError, TAG_COMMIT, TAG_DELETE,
  TAG_PUT,
} from "../src/format.ts";
import type { FileSystem } from "../src/fs.ts";
import { decodeHints, encodeHints } from "../src/hints.ts";
import { KeyIndex } from "../src/keyindex.ts";
import { crc32, WasmCore } from "../src/wasm.ts";
import { FaultyFs, SeededRandom } from "../adapters/faulty.ts";

const enc = new TextEncoder();

/** A deterministic 32-byte id for n. */
function key(n: number): Uint8Array {
  return enc.encode(`id-${n}`.padEnd(KEY_SIZE, "."));
}
function val(n: number, version: number, length = 40): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (n * 31 + version * 7 + i) & 0xff;
  return out;
}

// ---------------------------------------------------------------------------
// Files through the adapter (the same code for the runtime fs and FaultyFs)

function readAll(fs: FileSystem, path: string): Uint8Array {
  const f = fs.open(path, "r");
  try {
    const buf = new Uint8Array(f.size());
    f.read(buf, 0);
    return buf;
  } finally {
    f.close();
  }
}
function writeAll(fs: FileSystem, path: string, bytes: Uint8Array): void {
  const f = fs.open(path, "w+");
  try {
    f.write(bytes, 0);
    f.sync();
  } finally {
    f.close();
  }
}
function truncateFile(fs: FileSystem, path: string, length: number): void {
  const f = fs.open(path, "r+");
  try {
    f.truncate(length);
    f.sync();
  } finally {
    f.close();
  }
}
/** Overwrites bytes [at, at + bytes.length) of a file. */
function patch(fs: FileSystem, path: string, at: number, bytes: Uint8Array): void {
  const f = fs.open(path, "r+");
  try {
    f.write(bytes, at);
    f.sync();
  } finally {
    f.close();
  }
}
function flipBit(fs: FileSystem, path: string, offset: number, bit = 0): void {
  const b = new Uint8Array(1);
  const f = fs.open(path, "r+");
  try {
    f.read(b, offset);
    b[0] ^= 1 << bit;
    f.write(b, offset);
    f.sync();
  } finally {
    f.close();
  }
}
function segmentPaths(fs: FileSystem, root: string): { n: number; path: string }[] {
  const out: { n: number; path: string }[] = [];
  for (const d of fs.readdir(`${root}/data`)) {
    for (const f of fs.readdir(`${root}/data/${d}`)) if (/^\d+$/.test(f)) out.push({ n: Number(f), path: `${root}/data/${d}/${f}` });
  }
  return out.sort((a, b) => a.n - b.n);
}
function checkpointFile(fs: FileSystem, root: string, prefix: "index" | "hints"): string {
  const names = fs.readdir(root).filter((n) => n.startsWith(`${prefix}.`) && !n.endsWith(".tmp"));
  assert.is(names.length, 1, `one ${prefix}.N in ${names.join(", ")}`);
  return `${root}/${names[0]}`;
}

/** One record of a segment, as walkSegment saw it before the test damaged anything. */
interface RecordInfo {
  offset: number;
  size: number;
  tag: number;
  id: string | undefined;
}
function segmentRecords(fs: FileSystem, path: string): RecordInfo[] {
  const out: RecordInfo[] = [];
  const f = fs.open(path, "r");
  try {
    walkSegment(f, f.size(), (r) => {
      out.push({ offset: r.offset, size: r.size, tag: r.tag, id: r.tag === TAG_COMMIT ? undefined : idHex(r.bytes.subarray(RECORD_HEADER_SIZE, RECORD_HEADER_SIZE + KEY_SIZE)) });
    }, () => assert.unreachable("a segment the store wrote has no damage"));
  } finally {
    f.close();
  }
  return out;
}
/** Ids of records overlapping [start, end): the only ids damage there may cost. */
function idsIn(records: RecordInfo[], start: number, end: number): Set<string> {
  const out = new Set<string>();
  for (const r of records) if (r.id !== undefined && r.offset < end && r.offset + r.size > start) out.add(r.id);
  return out;
}

// ---------------------------------------------------------------------------
// Stores with a model of what they hold

/** What a store should hold: id hex -> value bytes, or a blob's bytes. */
interface Model {
  values: Map<string, Uint8Array>;
  blobs: Map<string, Uint8Array>;
  /** Ids written once and deleted since. */
  deleted: Set<string>;
  ids: Map<string, Uint8Array>;
}
function modelNew(): Model {
  return { values: new Map(), blobs: new Map(), deleted: new Set(), ids: new Map() };
}

/** Puts a blob as blobs.ts lays it out (file blobs/xx/<id>.<serial>, BLOB record), without depending on blobs.ts. */
async function putBlobFile(store: Store, id: Uint8Array, bytes: Uint8Array): Promise<void> {
  const hasher = await createBLAKE3(256);
  hasher.init();
  hasher.update(bytes);
  const hash = hasher.digest("binary");
  const serial = store.nextTxid;
  const fs = store.fs;
  const hex = idHex(id);
  for (const dir of [store.paths.blobs, store.paths.blobDir(hex)]) {
    if (fs.stat(dir) === undefined) {
      fs.mkdir(dir);
      fs.syncDir(dir.slice(0, dir.lastIndexOf("/")));
    }
  }
  writeAll(fs, store.paths.blob(hex, serial), bytes);
  fs.syncDir(store.paths.blobDir(hex));
  store.appendBlobRecord(id, BigInt(bytes.length), hash, serial);
}

function modelPut(m: Model, id: Uint8Array, v: Uint8Array, blob = false): void {
  const h = idHex(id);
  m.ids.set(h, id);
  m.deleted.delete(h);
  m.values.delete(h);
  m.blobs.delete(h);
  (blob ? m.blobs : m.values).set(h, v);
}
function modelDelete(m: Model, id: Uint8Array): void {
  const h = idHex(id);
  m.values.delete(h);
  m.blobs.delete(h);
  m.deleted.add(h);
}

/**
 * A store of a few segments: transactions of puts, overwrites, deletes and
 * an occasional blob, drawn from `seed`; sometimes a compaction. Closed.
 */
async function buildStore(c: AdapterCase, seed: number, options: OpenOptions = {}): Promise<{ root: string; model: Model }> {
  const rng = new SeededRandom(seed);
  const root = `${c.root}/store-${seed}`;
  const store = Store.open(root, { fs: c.fs, create: true, maxSegmentSize: 2048, ...options });
  const m = modelNew();
  const txns = 6 + rng.below(6);
  let version = 0;
  for (let t = 0; t < txns; t++) {
    const ops = 3 + rng.below(10);
    for (let o = 0; o < ops; o++) {
      const n = rng.below(40);
      const id = key(n);
      const h = idHex(id);
      const roll = rng.below(10);
      if (roll < 2 && (m.values.has(h) || m.blobs.has(h))) {
        assert.is(store.delete(id), true);
        modelDelete(m, id);
      } else if (roll === 2 && rng.below(3) === 0) {
        const bytes = val(n, ++version, 1 + rng.below(3000));
        await putBlobFile(store, id, bytes);
        modelPut(m, id, bytes, true);
      } else {
        const v = val(n, ++version, rng.below(200));
        store.put(id, v);
        modelPut(m, id, v);
      }
    }
    store.commit();
    if (rng.below(8) === 0) store.compact();
  }
  store.close();
  return { root, model: m };
}

/** Every id reads its model value, or (when `lost` has it) is absent; deleted ids are absent. */
function assertModel(store: Store, m: Model, lost: Set<string> = new Set(), where = ""): void {
  for (const [h, v] of m.values) {
    const id = m.ids.get(h)!;
    if (lost.has(h)) {
      assert.is(store.has(id), false, `${where}: lost id ${h} is absent`);
      continue;
    }
    assert.equal(store.get(id), v, `${where}: value of ${h}`);
  }
  for (const [h, bytes] of m.blobs) {
    const id = m.ids.get(h)!;
    if (lost.has(h)) {
      assert.is(store.has(id), false, `${where}: lost blob ${h} is absent`);
      continue;
    }
    const rec = store.blobRecord(id);
    assert.ok(rec !== undefined, `${where}: blob ${h} is there`);
    assert.equal(readAll(store.fs, store.paths.blob(h, rec.serial)), bytes, `${where}: blob ${h} bytes`);
  }
  for (const h of m.deleted) {
    if (m.values.has(h) || m.blobs.has(h)) continue;
    assert.is(store.has(m.ids.get(h)!), false, `${where}: deleted id ${h} stays deleted`);
  }
}

/**
 * "Never wrong data": every read gives the model's value or IntegrityError
 * (a deleted id gives undefined or IntegrityError; an id in `mayLose`, one
 * a repair may have removed, may give undefined). Returns how many reads
 * raised IntegrityError.
 */
function assertNeverWrong(store: Store, m: Model, mayLose: Set<string> = new Set()): number {
  let integrity = 0;
  const attempt = (fn: () => void) => {
    try {
      fn();
    } catch (e) {
      if (!(e instanceof IntegrityError)) throw e;
      integrity++;
    }
  };
  for (const [h, v] of m.values) {
    attempt(() => {
      const got = store.get(m.ids.get(h)!);
      if (got !== undefined || !mayLose.has(h)) assert.equal(got, v, `value of ${h}`);
    });
  }
  for (const [h] of m.blobs) attempt(() => assert.ok(store.blobRecord(m.ids.get(h)!) !== undefined, `blob ${h} is there`));
  for (const h of m.deleted) {
    if (m.values.has(h) || m.blobs.has(h)) continue;
    attempt(() => assert.is(store.get(m.ids.get(h)!), undefined, `deleted id ${h}`));
  }
  return integrity;
}

function kinds(report: CheckReport): string[] {
  return [...new Set(report.problems.map((p) => p.kind))].sort();
}
function describe(report: CheckReport): string {
  return report.problems.map((p) => `${p.kind}: ${p.message}`).join("\n");
}

function each(name: string, fn: (c: AdapterCase) => void | Promise<void>): void {
  for (const kind of ["runtime", "faulty"] as const) {
    test(`${kind === "runtime" ? "runtime fs" : "faulty fs"}: ${name}`, async () => {
      const cases = adapterCases({ prefix: "segstore-check-" });
      const c = kind === "runtime" ? cases[0] : cases[1];
      (kind === "runtime" ? cases[1] : cases[0]).cleanup();
      try {
        await fn(c);
      } finally {
        c.cleanup();
      }
    });
  }
}

/** Opens the store at root, checks it, checks the model (with the ids lost so far), and closes it. */
async function assertHealthy(c: AdapterCase, root: string, m: Model, lost: Set<string>, where: string): Promise<void> {
  const store = Store.open(root, { fs: c.fs });
  try {
    const report = await store.check();
    assert.ok(report.ok, `${where}: check after repair passes:\n${describe(report)}`);
    assertModel(store, m, lost, where);
  } finally {
    store.close();
  }
}

// ---------------------------------------------------------------------------
// walkSegment

test("walkSegment() resynchronises after a damaged record and reports the damaged stretch", () => {
  const records: Uint8Array[] = [];
  for (let i = 0; i < 6; i++) {
    const rec = new Uint8Array(RECORD_HEADER_SIZE + KEY_SIZE + 10 + i);
    const dv = new DataView(rec.buffer);
    dv.setUint32(4, rec.length, true);
    rec[8] = TAG_PUT;
    rec.set(key(i), RECORD_HEADER_SIZE);
    dv.setUint32(0, crc32(rec.subarray(4)), true);
    records.push(rec);
  }
  const total = SEGMENT_MAGIC.length + records.reduce((a, r) => a + r.length, 0);
  const bytes = new Uint8Array(total);
  bytes.set(SEGMENT_MAGIC, 0);
  const offsets: number[] = [];
  let at = SEGMENT_MAGIC.length;
  for (const r of records) {
    offsets.push(at);
    bytes.set(r, at);
    at += r.length;
  }
  const fs = new FaultyFs({ seed: 3 });
  fs.mkdirp("/w");
  const walk = (data: Uint8Array) => {
    fs.writeFile("/w/seg", data);
    const f = fs.open("/w/seg", "r");
    const seen: number[] = [];
    const damage: [number, number, string][] = [];
    try {
      walkSegment(f, data.length, (r) => seen.push(r.offset), (s, e, why) => damage.push([s, e, why]));
    } finally {
      f.close();
    }
    return { seen, damage };
  };
  assert.equal(walk(bytes), { seen: offsets, damage: [] });
  const flipped = bytes.slice();
  flipped[offsets[2] + 50] ^= 0x10;
  assert.equal(walk(flipped), { seen: [offsets[0], offsets[1], offsets[3], offsets[4], offsets[5]], damage: [[offsets[2], offsets[3], "bad-crc"]] });
  const badSize = bytes.slice();
  badSize[offsets[1] + 7] = 0xff; // size field's top byte: far out of bounds
  assert.equal(walk(badSize), { seen: [offsets[0], offsets[2], offsets[3], offsets[4], offsets[5]], damage: [[offsets[1], offsets[2], "bad-header"]] });
  const badMagic = bytes.slice();
  badMagic[0] ^= 1;
  assert.equal(walk(badMagic), { seen: offsets, damage: [[0, offsets[0], "bad-magic"]] });
  assert.equal(walk(bytes.subarray(0, offsets[4] + 5)), { seen: offsets.slice(0, 4), damage: [[offsets[4], offsets[4] + 5, "truncated"]] });
  const garbage = bytes.slice();
  garbage.fill(0xee, offsets[1], offsets[4] + 3);
  assert.equal(walk(garbage), { seen: [offsets[0], offsets[5]], damage: [[offsets[1], offsets[5], "bad-header"]] });
});

// ---------------------------------------------------------------------------
// A clean store; options and states

each("check() of a clean store is ok and counts records, segments and blobs; read-only too", async (c) => {
  const { root, model } = await buildStore(c, 11);
  const store = Store.open(root, { fs: c.fs });
  const report = await store.check();
  assert.ok(report.ok, describe(report));
  assert.equal(report.problems, []);
  assert.equal(report.lost, []);
  assert.is(report.repaired, false);
  assert.is(report.segments, segmentPaths(c.fs, root).length);
  assert.ok(report.segments > 1, "the store spans segments");
  assert.is(report.records, segmentPaths(c.fs, root).reduce((a, s) => a + segmentRecords(c.fs, s.path).length, 0));
  assert.is(report.blobs, model.blobs.size);
  const repaired = await store.check({ repair: true });
  assert.ok(repaired.ok && !repaired.repaired, "repair of a clean store does nothing");
  store.close();
  const ro = Store.open(root, { fs: c.fs, readOnly: true });
  assert.ok((await ro.check()).ok, "read-only check");
  ro.close();
  assert.ok((await checkPath(root, { fs: c.fs })).ok, "checkPath");
});

each("check() refuses an open transaction, repair on a read-only store, unknown options and a closed store", async (c) => {
  const root = `${c.root}/s`;
  const store = Store.open(root, { fs: c.fs, create: true });
  store.put(key(1), val(1, 1));
  await store.check().then(() => assert.unreachable("in a transaction"), (e) => {
    assert.ok(e instanceof StateError && e.code === "EBUSY", String(e));
  });
  store.commit();
  await store.check({ bogus: true } as never).then(() => assert.unreachable(), (e) => assert.ok(e instanceof TypeError && /bogus/.test(e.message)));
  await store.check({ repair: "yes" } as never).then(() => assert.unreachable(), (e) => assert.instance(e, TypeError));
  store.close();
  await store.check().then(() => assert.unreachable(), (e) => assert.ok(e instanceof StateError && e.code === "ECLOSED"));
  const ro = Store.open(root, { fs: c.fs, readOnly: true });
  await ro.check({ repair: true }).then(() => assert.unreachable(), (e) => assert.ok(e instanceof StateError && e.code === "EREADONLY"));
  ro.close();
  await checkPath(root, {} as never).then(() => assert.unreachable(), (e) => assert.instance(e, TypeError));
});

each("onProgress reports bytes done up to the total, segments then blobs", async (c) => {
  const { root, model } = await buildStore(c, 12);
  const store = Store.open(root, { fs: c.fs });
  const blob = val(7, 7, 5000);
  await putBlobFile(store, key(77), blob);
  modelPut(model, key(77), blob, true);
  store.commit();
  const calls: [number, number][] = [];
  await store.check({ onProgress: (done, total) => calls.push([done, total]) });
  store.close();
  assert.ok(calls.length >= segmentPaths(c.fs, root).length);
  for (let i = 1; i < calls.length; i++) assert.ok(calls[i][0] >= calls[i - 1][0], "done never goes back");
  for (const [done, total] of calls) assert.ok(done <= total);
  const [doneLast, totalLast] = calls[calls.length - 1];
  assert.is(doneLast, totalLast);
  const segmentBytes = segmentPaths(c.fs, root).reduce((a, s) => a + c.fs.stat(s.path)!.size, 0);
  const blobBytes = [...model.blobs.values()].reduce((a, b) => a + b.length, 0);
  assert.is(totalLast, segmentBytes + blobBytes);
});

// ---------------------------------------------------------------------------
// Segment damage, one kind at a time

/** A store whose ids 0..n-1 each sit in their own record, spread over segments; closed. */
function simpleStore(c: AdapterCase, n = 30, options: OpenOptions = {}): { root: string; model: Model } {
  const root = `${c.root}/simple`;
  const store = Store.open(root, { fs: c.fs, create: true, maxSegmentSize: 1024, ...options });
  const m = modelNew();
  for (let i = 0; i < n; i++) {
    store.put(key(i), val(i, 1, 60));
    modelPut(m, key(i), val(i, 1, 60));
    if (i % 4 === 3) store.commit();
  }
  store.commit();
  store.close();
  return { root, model: m };
}
/** Where id n's (newest) record is. */
function recordOf(c: AdapterCase, root: string, n: number): { segment: number; path: string; record: RecordInfo } {
  const h = idHex(key(n));
  let found: { segment: number; path: string; record: RecordInfo } | undefined;
  for (const s of segmentPaths(c.fs, root)) {
    for (const r of segmentRecords(c.fs, s.path)) if (r.id === h && r.tag !== TAG_DELETE) found = { segment: s.n, path: s.path, record: r };
  }
  assert.ok(found, `id ${n} has a record`);
  return found;
}

each("a flipped bit in a value: get raises IntegrityError; check names segment and offset; repair loses only that id", async (c) => {
  const { root, model } = simpleStore(c);
  const { segment, path, record } = recordOf(c, root, 5);
  flipBit(c.fs, path, record.offset + record.size - 3, 6);
  const store = Store.open(root, { fs: c.fs });
  assert.throws(() => store.get(key(5)), (e: unknown) => e instanceof IntegrityError && e.segment === segment && e.offset === record.offset);
  const report = await store.check();
  assert.not.ok(report.ok);
  const p = report.problems.find((x) => x.kind === "segment-record")!;
  assert.ok(p, describe(report));
  assert.is(p.segment, segment);
  assert.is(p.offset, record.offset);
  assert.is(p.file, path);
  assert.match(p.message, /bad-crc record at offset/);
  assert.ok(report.problems.some((x) => x.kind === "index-extra" && x.id === idHex(key(5)) && /damaged bytes/.test(x.message)), describe(report));
  const repaired = await store.check({ repair: true });
  assert.ok(repaired.repaired, describe(repaired));
  assert.equal(repaired.lost, [idHex(key(5))]);
  assert.is(store.has(key(5)), false);
  assertModel(store, model, new Set(repaired.lost), "after repair");
  store.put(key(5), val(5, 2));
  store.commit();
  store.close();
  await assertHealthy(c, root, { ...model, values: new Map([...model.values, [idHex(key(5)), val(5, 2)]]) }, new Set(), "reopened");
});

each("a damaged newest version: repair never falls back to the superseded one", async (c) => {
  const root = `${c.root}/s`;
  const store = Store.open(root, { fs: c.fs, create: true, maxSegmentSize: 1024 });
  for (let i = 0; i < 20; i++) store.put(key(i), val(i, 1, 80));
  store.commit();
  for (let i = 0; i < 20; i++) store.put(key(100 + i), val(100 + i, 1, 80)); // later segments
  store.put(key(3), val(3, 2, 80)); // overwrite: the old version stays in the log
  store.commit();
  store.close();
  const { path, record } = recordOf(c, root, 3);
  flipBit(c.fs, path, record.offset + 60);
  const s = Store.open(root, { fs: c.fs });
  const report = await s.check({ repair: true });
  assert.ok(report.repaired, describe(report));
  assert.equal(report.lost, [idHex(key(3))]);
  assert.is(s.has(key(3)), false, "not the old version");
  assert.is(s.get(key(3)), undefined);
  s.close();
  const again = Store.open(root, { fs: c.fs });
  assert.is(again.get(key(3)), undefined, "not after reopen either");
  assert.ok((await again.check()).ok);
  again.close();
});

each("a damaged DELETE: repair does not let the deleted id come back", async (c) => {
  const root = `${c.root}/s`;
  const store = Store.open(root, { fs: c.fs, create: true, maxSegmentSize: 1024 });
  for (let i = 0; i < 20; i++) store.put(key(i), val(i, 1, 80));
  store.commit();
  for (let i = 0; i < 12; i++) store.put(key(100 + i), val(100 + i, 1, 80));
  store.delete(key(7));
  store.put(key(200), val(200, 1, 10));
  store.commit();
  store.close();
  const h7 = idHex(key(7));
  let del: { path: string; record: RecordInfo } | undefined;
  for (const s of segmentPaths(c.fs, root)) for (const r of segmentRecords(c.fs, s.path)) if (r.id === h7 && r.tag === TAG_DELETE) del = { path: s.path, record: r };
  assert.ok(del);
  flipBit(c.fs, del.path, del.record.offset + 20);
  const s = Store.open(root, { fs: c.fs });
  assert.is(s.get(key(7)), undefined, "the open store still knows it is deleted");
  const report = await s.check({ repair: true });
  assert.ok(report.repaired, describe(report));
  assert.equal(report.lost, [h7]);
  assert.is(s.has(key(7)), false);
  s.close();
  const again = Store.open(root, { fs: c.fs });
  assert.is(again.has(key(7)), false, "still deleted after reopen");
  assert.equal(again.get(key(200)), val(200, 1, 10));
  again.close();
});

each("mod.ts's checkPath finds and repairs damage by path, with the adapter given or the runtime's", async (c) => {
  const { root, model } = simpleStore(c);
  const segs = segmentPaths(c.fs, root);
  flipBit(c.fs, segs[1].path, 2);
  const report = await modCheckPath(root, { fs: c.fs });
  assert.equal(kinds(report), ["segment-magic"], describe(report));
  // Without fs it uses the runtime's adapter: right for a store on the real disk, and a missing path there otherwise.
  if (c.name !== "faulty") assert.equal(kinds(await modCheckPath(root)), ["segment-magic"]);
  const repaired = await modCheckPath(root, { fs: c.fs, repair: true });
  assert.ok(repaired.repaired, describe(repaired));
  await assertHealthy(c, root, model, new Set(), "after repair");
});

each("a segment with a bad magic is rewritten with its records; nothing is lost", async (c) => {
  const { root, model } = simpleStore(c);
  const segs = segmentPaths(c.fs, root);
  flipBit(c.fs, segs[1].path, 2);
  const report = await checkPath(root, { fs: c.fs });
  assert.equal(kinds(report), ["segment-magic"], describe(report));
  assert.is(report.problems[0].segment, segs[1].n);
  assert.is(report.problems[0].offset, 0);
  const repaired = await checkPath(root, { fs: c.fs, repair: true });
  assert.ok(repaired.repaired, describe(repaired));
  assert.equal(repaired.lost, []);
  await assertHealthy(c, root, model, new Set(), "after repair");
  assert.equal(readAll(c.fs, segs[1].path).subarray(0, 8), SEGMENT_MAGIC);
});

each("a middle segment cut short: the store opens from its checkpoint; repair loses exactly the ids cut off", async (c) => {
  const { root, model } = simpleStore(c);
  const segs = segmentPaths(c.fs, root);
  const target = segs[1];
  const records = segmentRecords(c.fs, target.path);
  const cut = records[2].offset + 10;
  truncateFile(c.fs, target.path, cut);
  const s = Store.open(root, { fs: c.fs });
  assertNeverWrong(s, model);
  const report = await s.check();
  assert.ok(report.problems.some((p) => p.kind === "segment-record" && p.segment === target.n && p.offset === records[2].offset), describe(report));
  const repaired = await s.check({ repair: true });
  assert.ok(repaired.repaired, describe(repaired));
  assert.equal(repaired.lost, [...idsIn(records, cut - 10, Infinity)].sort());
  s.close();
  await assertHealthy(c, root, model, new Set(repaired.lost), "after repair");
});

each("the newest segment cut short: open refuses (its checkpoint vouches for more); checkPath repairs by path", async (c) => {
  const { root, model } = simpleStore(c);
  const segs = segmentPaths(c.fs, root);
  const last = segs[segs.length - 1];
  const records = segmentRecords(c.fs, last.path);
  const cut = records[records.length - 1].offset + 5; // inside the final COMMIT
  truncateFile(c.fs, last.path, cut);
  assert.throws(() => Store.open(root, { fs: c.fs }), (e: unknown) => e instanceof IntegrityError && /vouches/.test((e as Error).message) && e.segment === last.n);
  const report = await checkPath(root, { fs: c.fs });
  assert.not.ok(report.ok);
  assert.ok(report.problems.some((p) => p.kind === "checkpoint" && p.segment === last.n), describe(report));
  const repaired = await checkPath(root, { fs: c.fs, repair: true });
  assert.ok(repaired.repaired, describe(repaired));
  // The last transaction's COMMIT is gone, but the checkpoint proves it committed: its records (ids 28 and 29) are kept.
  assert.equal(repaired.lost, []);
  await assertHealthy(c, root, model, new Set(), "after repair");
});

each("a torn tail after the last commit is no problem: read-only check ignores it, a writable open cuts it", async (c) => {
  const { root, model } = simpleStore(c);
  const segs = segmentPaths(c.fs, root);
  const last = segs[segs.length - 1].path;
  const size = c.fs.stat(last)!.size;
  const torn = val(1, 1, 30);
  torn[4] = 200; // a plausible header, cut short: what a crash mid-append leaves
  patch(c.fs, last, size, torn);
  const report = await checkPath(root, { fs: c.fs });
  assert.ok(report.ok, describe(report));
  const s = Store.open(root, { fs: c.fs });
  assert.is(c.fs.stat(last)!.size, size, "open cut the tail");
  assert.ok((await s.check()).ok);
  assertModel(s, model);
  s.close();
});

each("a segment cut short at a record boundary below its checkpoint: the records before the cut are kept, those after are lost", async (c) => {
  const root = `${c.root}/s`;
  const store = Store.open(root, { fs: c.fs, create: true, maxSegmentSize: 4096 });
  const m = modelNew();
  for (let i = 0; i < 10; i++) {
    store.put(key(i), val(i, 1));
    modelPut(m, key(i), val(i, 1));
  }
  store.commit();
  // One last transaction: delete 0, overwrite 1, add 20, 21.
  store.delete(key(0));
  modelDelete(m, key(0));
  store.put(key(1), val(1, 2));
  modelPut(m, key(1), val(1, 2));
  store.put(key(20), val(20, 1));
  modelPut(m, key(20), val(20, 1));
  store.put(key(21), val(21, 1));
  modelPut(m, key(21), val(21, 1));
  store.commit();
  store.close();
  const seg = segmentPaths(c.fs, root)[0].path;
  const records = segmentRecords(c.fs, seg);
  const at21 = records.find((r) => r.id === idHex(key(21)))!;
  truncateFile(c.fs, seg, at21.offset); // PUT(21) and the final COMMIT are gone; every record before is whole
  const report = await checkPath(root, { fs: c.fs });
  assert.ok(report.problems.some((p) => p.kind === "segment-record" && p.offset === at21.offset && /vouches/.test(p.message)), describe(report));
  const repaired = await checkPath(root, { fs: c.fs, repair: true });
  assert.ok(repaired.repaired, describe(repaired));
  assert.equal(repaired.lost, [idHex(key(21))]);
  await assertHealthy(c, root, m, new Set(repaired.lost), "after repair");
});

each("a store that does not open (damage before later segments, no checkpoint): checkPath reports and repairs it", async (c) => {
  const { root, model } = simpleStore(c);
  for (const n of c.fs.readdir(root)) if (/^(index|hints)\./.test(n)) c.fs.unlink(`${root}/${n}`);
  const segs = segmentPaths(c.fs, root);
  const records = segmentRecords(c.fs, segs[1].path);
  const victim = records.find((r, i) => i > 0 && r.tag === TAG_PUT)!;
  flipBit(c.fs, segs[1].path, victim.offset + 45);
  assert.throws(() => Store.open(root, { fs: c.fs }), (e: unknown) => e instanceof IntegrityError && e.segment === segs[1].n);
  const report = await checkPath(root, { fs: c.fs });
  assert.equal(kinds(report), ["segment-record"], describe(report));
  assert.is(report.problems[0].offset, victim.offset);
  const repaired = await checkPath(root, { fs: c.fs, repair: true });
  assert.ok(repaired.repaired, describe(repaired));
  // Without a checkpoint only the damaged record's surviving header can name the id.
  assert.equal(repaired.lost, [victim.id!]);
  await assertHealthy(c, root, model, new Set(repaired.lost), "after repair");
});

each("a COMMIT whose transaction id does not rise: reported; repair drops it and keeps its records", async (c) => {
  const root = `${c.root}/s`;
  const store = Store.open(root, { fs: c.fs, create: true });
  const m = modelNew();
  for (let i = 0; i < 5; i++) {
    store.put(key(i), val(i, 1));
    modelPut(m, key(i), val(i, 1));
    store.commit();
  }
  store.close();
  for (const n of c.fs.readdir(root)) if (/^(index|hints)\./.test(n)) c.fs.unlink(`${root}/${n}`);
  // Append by hand: PUT(10), COMMIT(2) (stale), PUT(11), COMMIT(6).
  const seg = segmentPaths(c.fs, root)[0].path;
  const put = (n: number) => {
    const rec = new Uint8Array(RECORD_HEADER_SIZE + KEY_SIZE + 5);
    const dv = new DataView(rec.buffer);
    dv.setUint32(4, rec.length, true);
    rec[8] = TAG_PUT;
    rec.set(key(n), RECORD_HEADER_SIZE);
    rec.set(val(n, 1, 5), RECORD_HEADER_SIZE + KEY_SIZE);
    dv.setUint32(0, crc32(rec.subarray(4)), true);
    return rec;
  };
  const commit = (txid: bigint) => {
    const rec = new Uint8Array(COMMIT_RECORD_SIZE);
    const dv = new DataView(rec.buffer);
    dv.setUint32(4, COMMIT_RECORD_SIZE, true);
    rec[8] = TAG_COMMIT;
    dv.setBigUint64(RECORD_HEADER_SIZE, txid, true);
    dv.setUint32(0, crc32(rec.subarray(4)), true);
    return rec;
  };
  const tail = [put(10), commit(2n), put(11), commit(6n)];
  let at = c.fs.stat(seg)!.size;
  const staleAt = at + tail[0].length;
  for (const r of tail) {
    patch(c.fs, seg, at, r);
    at += r.length;
  }
  modelPut(m, key(10), val(10, 1, 5));
  modelPut(m, key(11), val(11, 1, 5));
  assert.throws(() => Store.open(root, { fs: c.fs }), (e: unknown) => e instanceof IntegrityError);
  const report = await checkPath(root, { fs: c.fs });
  assert.equal(kinds(report), ["segment-txid"], describe(report));
  assert.is(report.problems[0].offset, staleAt);
  const repaired = await checkPath(root, { fs: c.fs, repair: true });
  assert.ok(repaired.repaired, describe(repaired));
  assert.equal(repaired.lost, []);
  await assertHealthy(c, root, m, new Set(), "after repair");
  const s = Store.open(root, { fs: c.fs });
  assert.is(s.stats().lastTxid, 6n);
  s.close();
});

// ---------------------------------------------------------------------------
// Checkpoints, hints, index, stats

each("a damaged index checkpoint: open uses the log; check reports the file; repair writes a good one", async (c) => {
  const { root, model } = simpleStore(c);
  const index = checkpointFile(c.fs, root, "index");
  flipBit(c.fs, index, 200, 3);
  const s = Store.open(root, { fs: c.fs });
  assertModel(s, model, new Set(), "opened from the log");
  const report = await s.check();
  assert.equal(kinds(report), ["checkpoint"], describe(report));
  assert.is(report.problems[0].file, index);
  const repaired = await s.check({ repair: true });
  assert.ok(repaired.repaired && repaired.lost.length === 0, describe(repaired));
  s.close();
  await assertHealthy(c, root, model, new Set(), "after repair");
  const fresh = Store.open(root, { fs: c.fs });
  assert.ok(fresh.stats().checkpoint !== null, "opened from the new checkpoint");
  fresh.close();
});

each("damaged hints: reported by file; hints with wrong counts: hints-mismatch by segment", async (c) => {
  const { root, model } = simpleStore(c);
  const hintsPath = checkpointFile(c.fs, root, "hints");
  const good = readAll(c.fs, hintsPath);
  truncateFile(c.fs, hintsPath, good.length - 4);
  let report = await checkPath(root, { fs: c.fs });
  assert.equal(kinds(report), ["hints"], describe(report));
  assert.is(report.problems[0].file, hintsPath);
  const hints = decodeHints(good, hintsPath);
  const [s0, stat] = [...hints.segments][0];
  hints.segments.set(s0, { ...stat, count: stat.count + 1 });
  writeAll(c.fs, hintsPath, encodeHints(hints));
  report = await checkPath(root, { fs: c.fs });
  // The store loads its stats from hints, so they are wrong too.
  assert.equal(kinds(report), ["hints-mismatch", "stats-mismatch"], describe(report));
  assert.ok(report.problems.every((p) => p.segment === s0), describe(report));
  const repaired = await checkPath(root, { fs: c.fs, repair: true });
  assert.ok(repaired.repaired && repaired.lost.length === 0, describe(repaired));
  await assertHealthy(c, root, model, new Set(), "after repair");
});

each("a checkpoint whose index disagrees with the log: checkpoint-mismatch per id; repair rebuilds", async (c) => {
  const { root, model } = simpleStore(c);
  const indexPath = checkpointFile(c.fs, root, "index");
  const f = c.fs.open(indexPath, "r");
  const { index, meta } = KeyIndex.loadCheckpoint(WasmCore.create(), f);
  f.close();
  const wrongId = key(4);
  const e = index.lookup(wrongId);
  index.set(wrongId, index.segmentAt(e), index.offsetAt(e) + 1, index.sizeAt(e));
  const out = c.fs.open(indexPath, "w+");
  index.writeCheckpoint(out, meta);
  out.sync();
  out.close();
  const s = Store.open(root, { fs: c.fs });
  assert.throws(() => s.get(wrongId), (x: unknown) => x instanceof IntegrityError, "the wrong entry is caught on read, never served");
  const report = await s.check();
  assert.ok(report.problems.some((p) => p.kind === "checkpoint-mismatch" && p.id === idHex(wrongId) && p.file === indexPath), describe(report));
  assert.ok(report.problems.some((p) => p.kind === "index-stale" && p.id === idHex(wrongId)), describe(report));
  const repaired = await s.check({ repair: true });
  assert.ok(repaired.repaired && repaired.lost.length === 0, describe(repaired));
  assertModel(s, model, new Set(), "after repair");
  s.close();
});

each("an open store's index and stats against the log: extra, missing, stale, stats; repair rebuilds, loses nothing", async (c) => {
  const { root, model } = simpleStore(c);
  const s = Store.open(root, { fs: c.fs });
  const { index, segments } = s.internals();
  const bogus = key(999);
  index.set(bogus, 0, 8, 50);
  const missing = key(2);
  assert.ok(index.remove(missing));
  const stale = key(6);
  const e = index.lookup(stale);
  index.set(stale, index.segmentAt(e), index.offsetAt(e) + 2, index.sizeAt(e));
  const stat = segments.get(1)!;
  stat.bytes += 7;
  const report = await s.check();
  const byKind = (k: string) => report.problems.filter((p) => p.kind === k);
  assert.equal(byKind("index-extra").map((p) => p.id), [idHex(bogus)]);
  assert.equal(byKind("index-missing").map((p) => p.id), [idHex(missing)]);
  assert.equal(byKind("index-stale").map((p) => p.id), [idHex(stale)]);
  assert.ok(byKind("stats-mismatch").some((p) => p.segment === 1), describe(report));
  const repaired = await s.check({ repair: true });
  assert.ok(repaired.repaired, describe(repaired));
  assert.equal(repaired.lost, []);
  assert.is(s.has(bogus), false);
  assertModel(s, model, new Set(), "after repair");
  s.close();
});

// ---------------------------------------------------------------------------
// Blobs

each("blob files: missing, cut short, damaged: reported by id and file; repair loses those ids", async (c) => {
  const root = `${c.root}/s`;
  const store = Store.open(root, { fs: c.fs, create: true });
  const m = modelNew();
  for (let i = 0; i < 5; i++) {
    const bytes = val(i, 1, 500 + i * 1000);
    await putBlobFile(store, key(i), bytes);
    modelPut(m, key(i), bytes, true);
    store.put(key(50 + i), val(50 + i, 1));
    modelPut(m, key(50 + i), val(50 + i, 1));
  }
  store.commit();
  assert.ok((await store.check()).ok);
  const path = (n: number) => store.paths.blob(idHex(key(n)), store.blobRecord(key(n))!.serial);
  c.fs.unlink(path(0));
  truncateFile(c.fs, path(1), 100);
  flipBit(c.fs, path(2), 1234, 5);
  const report = await store.check();
  const problem = (n: number) => report.problems.find((p) => p.id === idHex(key(n)));
  assert.is(problem(0)?.kind, "blob-missing");
  assert.is(problem(1)?.kind, "blob-length");
  assert.is(problem(2)?.kind, "blob-hash");
  assert.is(problem(2)?.file, path(2));
  assert.is(problem(3), undefined);
  assert.is(report.blobs, 5);
  const repaired = await store.check({ repair: true });
  assert.ok(repaired.repaired, describe(repaired));
  assert.equal(repaired.lost, [0, 1, 2].map((n) => idHex(key(n))).sort());
  assertModel(store, m, new Set(repaired.lost), "after repair");
  store.close();
  await assertHealthy(c, root, m, new Set(repaired.lost), "reopened");
});

// ---------------------------------------------------------------------------
// Seeded random corruption: the contract, trial by trial

type Damage = { file: string; kind: "segment" | "index" | "hints" | "blob"; start: number; end: number; what: string; blobId?: string };

/** Damages one file of the store at random: flipped bits, a cut, zeros or garbage over a stretch, a deleted blob. */
function damageAtRandom(c: AdapterCase, root: string, m: Model, rng: SeededRandom): Damage {
  const fs = c.fs;
  const segs = segmentPaths(fs, root);
  // The live file of each blob: the highest serial (older ones are left behind, as no blobs.ts hook removes them here).
  const live = new Map<string, { path: string; id: string; serial: number }>();
  if (fs.stat(`${root}/blobs`) !== undefined) {
    for (const d of fs.readdir(`${root}/blobs`)) {
      for (const name of fs.readdir(`${root}/blobs/${d}`)) {
        const id = name.slice(0, 64);
        const serial = Number(name.slice(65));
        if (m.blobs.has(id) && serial > (live.get(id)?.serial ?? -1)) live.set(id, { path: `${root}/blobs/${d}/${name}`, id, serial });
      }
    }
  }
  const blobFiles = [...live.values()].sort((a, b) => (a.path < b.path ? -1 : 1));
  const roll = rng.below(20);
  let kind: Damage["kind"];
  let file: string;
  let blobId: string | undefined;
  if (roll < 12 || (roll >= 17 && blobFiles.length === 0)) {
    kind = "segment";
    file = segs[rng.below(segs.length)].path;
  } else if (roll < 15) {
    kind = "index";
    file = checkpointFile(fs, root, "index");
  } else if (roll < 17) {
    kind = "hints";
    file = checkpointFile(fs, root, "hints");
  } else {
    kind = "blob";
    const b = blobFiles[rng.below(blobFiles.length)];
    file = b.path;
    blobId = b.id;
  }
  const size = fs.stat(file)!.size;
  const how = rng.below(10);
  if (kind === "blob" && how === 9) {
    fs.unlink(file);
    return { file, kind, start: 0, end: size, what: "deleted", blobId };
  }
  if (how < 5 || size < 4) {
    const at = rng.below(size);
    flipBit(fs, file, at, rng.below(8));
    return { file, kind, start: at, end: at + 1, what: `bit flipped at ${at}`, blobId };
  }
  if (how < 7) {
    const at = rng.below(size);
    truncateFile(fs, file, at);
    return { file, kind, start: at, end: size, what: `cut at ${at}`, blobId };
  }
  const at = rng.below(size - 1);
  const len = 1 + rng.below(Math.min(64, size - at));
  const bytes = new Uint8Array(len);
  if (how === 7) for (let i = 0; i < len; i++) bytes[i] = rng.below(256);
  const before = readAll(fs, file).subarray(at, at + len);
  if (bytes.every((b, i) => b === before[i])) bytes[0] ^= 0xff; // damage must change something
  patch(fs, file, at, bytes);
  return { file, kind, start: at, end: at + len, what: `${how === 7 ? "garbage" : "zeros"} over [${at}, ${at + len})`, blobId };
}

/** True when a damaged hints file decodes to the same position and segment stats (only the advisory compact list changed). */
function hintsHarmless(fs: FileSystem, path: string, original: Uint8Array): boolean {
  try {
    const a = decodeHints(original, path);
    const b = decodeHints(readAll(fs, path), path);
    return a.segment === b.segment && a.offset === b.offset && a.txid === b.txid &&
      JSON.stringify([...a.segments]) === JSON.stringify([...b.segments]);
  } catch {
    return false;
  }
}

/**
 * The ids damage to a segment may cost: those of the records from the last
 * COMMIT before the damage (the damage may hold the COMMIT of the records
 * after it, even in earlier segments) to the end of the damaged segment.
 */
function segmentMayLose(log: { path: string; records: RecordInfo[] }[], damage: Damage): Set<string> {
  const flat: RecordInfo[] = [];
  let damagedAt = -1;
  for (const s of log) {
    for (const r of s.records) {
      if (s.path === damage.file && damagedAt < 0 && r.offset + r.size > damage.start) damagedAt = flat.length;
      flat.push(r);
    }
    if (s.path === damage.file) {
      if (damagedAt < 0) damagedAt = flat.length;
      const out = new Set<string>();
      let from = damagedAt;
      while (from > 0 && flat[from - 1].tag !== TAG_COMMIT) from--;
      for (const r of flat.slice(from)) if (r.id !== undefined) out.add(r.id);
      return out;
    }
  }
  throw new Error(`damaged file ${damage.file} is not a segment`);
}

async function corruptionTrial(c: AdapterCase, seed: number): Promise<void> {
  const rng = new SeededRandom(seed * 7919);
  const { root, model } = await buildStore(c, seed, { checkpointBytes: rng.below(2) === 0 ? 1 : undefined });
  const records = segmentPaths(c.fs, root).map((s) => ({ ...s, records: segmentRecords(c.fs, s.path) }));
  const hintsBefore = readAll(c.fs, checkpointFile(c.fs, root, "hints"));
  const damage = damageAtRandom(c, root, model, rng);
  const where = `seed ${seed}: ${damage.kind} ${damage.file} ${damage.what}`;

  // 1. Open or read: IntegrityError or the right data, never wrong data.
  let opened: Store | undefined;
  try {
    opened = Store.open(root, { fs: c.fs, readOnly: true });
  } catch (e) {
    if (!(e instanceof IntegrityError)) throw e;
    assert.is(damage.kind, "segment", `${where}: only segment damage may stop open (${(e as Error).message})`);
  }
  if (opened !== undefined) {
    try {
      const integrity = assertNeverWrong(opened, model);
      if (damage.kind !== "segment") assert.is(integrity, 0, `${where}: a damaged ${damage.kind} file never fails a read`);
    } finally {
      opened.close();
    }
  }

  // 2. Check reports it, naming the segment or the file.
  const report = await checkPath(root, { fs: c.fs });
  const harmless = damage.kind === "hints" && hintsHarmless(c.fs, damage.file, hintsBefore);
  if (!harmless) {
    assert.not.ok(report.ok, `${where}: check reports it`);
    const segment = damage.kind === "segment" ? Number(damage.file.slice(damage.file.lastIndexOf("/") + 1)) : undefined;
    const names = (p: CheckProblem) => p.file === damage.file || (segment !== undefined && p.segment === segment);
    assert.ok(report.problems.some(names), `${where}: a problem names it:\n${describe(report)}`);
  }

  // 3. Repair: a store that opens and passes check; every id reads right or is listed as lost (and absent).
  const repaired = await checkPath(root, { fs: c.fs, repair: true });
  if (!report.ok) assert.ok(repaired.repaired, `${where}: repaired:\n${describe(repaired)}`);
  const mayLose = damage.kind === "segment" ? segmentMayLose(records, damage)
    : damage.kind === "blob" ? new Set([damage.blobId!]) : new Set<string>();
  for (const id of repaired.lost) assert.ok(mayLose.has(id), `${where}: lost ${id} had a record in the damage`);
  await assertHealthy(c, root, model, new Set(repaired.lost), where);
}

/** Trials per run; SEGSTORE_CHECK_TRIALS=N runs N on FaultyFs (a soak), from seed SEGSTORE_CHECK_SEED (default 1). */
const TRIALS_FAULTY = Number(process.env.SEGSTORE_CHECK_TRIALS ?? 60);
const TRIALS_RUNTIME = 20;
const TRIAL_SEED_FIRST = Number(process.env.SEGSTORE_CHECK_SEED ?? 1);

for (const kind of ["faulty", "runtime"] as const) {
  const trials = kind === "faulty" ? TRIALS_FAULTY : TRIALS_RUNTIME;
  test(`${kind === "runtime" ? "runtime fs" : "faulty fs"}: ${trials} seeded corruptions of segments, checkpoints, hints and blobs keep the contract`, async () => {
    const cases = adapterCases({ prefix: "segstore-check-random-" });
    const c = kind === "runtime" ? cases[0] : cases[1];
    (kind === "runtime" ? cases[1] : cases[0]).cleanup();
    try {
      const first = kind === "faulty" ? TRIAL_SEED_FIRST : 1000 + TRIAL_SEED_FIRST;
      for (let seed = first; seed < first + trials; seed++) await corruptionTrial(c, seed);
    } finally {
      c.cleanup();
    }
  });
}

// ---------------------------------------------------------------------------
// Power loss during repair

test("faulty fs: power loss at every mutation of a repair, then repair again: never a superseded or wrong version", async () => {
  const base = new FaultyFs({ seed: 5 });
  base.mkdirp("/root");
  const c: AdapterCase = { name: "faulty", fs: base, root: "/root", cleanup() {} };
  const { root, model } = await buildStore(c, 77);
  // Damage the newest version of an overwritten id, so a crash that exposed the old one would show.
  const root0 = root;
  let target: { path: string; record: RecordInfo } | undefined;
  const versions = new Map<string, number>();
  for (const s of segmentPaths(base, root0)) {
    for (const r of segmentRecords(base, s.path)) {
      if (r.tag !== TAG_PUT || r.id === undefined) continue;
      versions.set(r.id, (versions.get(r.id) ?? 0) + 1);
      if (versions.get(r.id)! > 1 && model.values.has(r.id)) target = { path: s.path, record: r };
    }
  }
  assert.ok(target, "the seed overwrites a live id");
  flipBit(base, target.path, target.record.offset + target.record.size - 1);
  const mayLose = new Set([target.record.id!]);
  // What a crash keeps: durable bytes and names only (strict POSIX), then a seeded mix of kept, torn and lost
  // writes and of names synced or not (a journal-less disk).
  const crashes = [{ label: "drop" }, { label: "mixed", mode: "mixed" as const, entries: "mixed" as const }];
  for (const crash of crashes) {
    let completed = false;
    for (let nth = 1; !completed; nth++) {
      assert.ok(nth < 500, "the walk ends");
      const where = `power loss at mutation ${nth} (${crash.label})`;
      const disk = base.clone();
      disk.powerLossAt(nth, { ops: "mutations" });
      try {
        await checkPath(root, { fs: disk, repair: true });
      } catch (e) {
        assert.ok(disk.powerLost, `only the power loss fails repair (${(e as Error).message})`);
      }
      if (!disk.powerLost) {
        completed = true;
        continue;
      }
      const after = disk.crash({ mode: crash.mode, entries: crash.entries, seed: nth });
      // Whatever survived opens and reads right (or refuses with IntegrityError), never wrong.
      try {
        const s = Store.open(root, { fs: after, readOnly: true });
        try {
          assertNeverWrong(s, model, mayLose);
        } finally {
          s.close();
        }
      } catch (e) {
        if (!(e instanceof IntegrityError)) throw e;
      }
      const again = await checkPath(root, { fs: after, repair: true });
      assert.ok(again.ok || again.repaired, `${where}: the second repair finishes:\n${describe(again)}`);
      const s = Store.open(root, { fs: after });
      try {
        for (const [h, v] of model.values) {
          const got = s.get(model.ids.get(h)!);
          if (got === undefined) assert.ok(mayLose.has(h), `${where}: ${h} is there`);
          else assert.equal(got, v, `${where}: ${h} is its newest version`);
        }
        assert.ok((await s.check()).ok, where);
      } finally {
        s.close();
      }
    }
  }
});

test.run();
