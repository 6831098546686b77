// The key index (src/keyindex.ts over the wasm hash table): agreement with a
// JS Map model over a million random operations across many grows (release
// and debug builds), batches, iteration, views across memory growth,
// checkpoint round trips through the runtime adapter and FaultyFs, and
// damaged checkpoints refused with IntegrityError naming the file.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { IntegrityError } from "../src/format.ts";
import type { FileSystem } from "../src/fs.ts";
import { type CheckpointMeta, CHECKPOINT_HEADER_SIZE, KeyIndex } from "../src/keyindex.ts";
import { crc32, WasmCore } from "../src/wasm.ts";
import { adapterCases } from "./_support/adapters.ts";

const test = suite("keyindex");

/** Deterministic xorshift32 generator, so a failure reproduces. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>>= 0);
  };
}

/**
 * A pool of n distinct keys: most random (ids are hashes), one in eight
 * structured (a big-endian counter in the last bytes, the rest zero) to
 * check that such ids do not pile into one probe run.
 */
function keyPool(n: number, seed: number): Uint8Array {
  const next = rng(seed);
  const keys = new Uint8Array(n * 32);
  const dv = new DataView(keys.buffer);
  for (let i = 0; i < n; i++) {
    if (i % 8 === 7) {
      dv.setUint32(i * 32 + 28, i, false);
    } else {
      for (let w = 0; w < 8; w++) dv.setUint32(i * 32 + w * 4, next(), true);
      keys[i * 32] = 1; // never all-zero-but-counter, so random keys cannot equal structured ones
    }
  }
  return keys;
}
const keyOf = (pool: Uint8Array, i: number) => pool.subarray(i * 32, i * 32 + 32);

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The model: pool index -> value, beside the index. */
class Model {
  readonly present: Uint8Array;
  readonly seg: Uint32Array;
  readonly off: Uint32Array;
  readonly size: Uint32Array;
  count = 0;
  constructor(n: number) {
    this.present = new Uint8Array(n);
    this.seg = new Uint32Array(n);
    this.off = new Uint32Array(n);
    this.size = new Uint32Array(n);
  }
}

/**
 * Full agreement: every model key is found, with its value, at its own
 * entry, whose keyAt is that key; distinct keys at distinct entries and the
 * same count, so [0, count) holds exactly the model's keys.
 */
function checkAgainstModel(index: KeyIndex, model: Model, pool: Uint8Array, where: string): void {
  assert.is(index.count, model.count, `${where}: count`);
  const taken = new Uint8Array(index.count);
  const key = new Uint8Array(32);
  for (let i = 0; i < model.present.length; i++) {
    if (!model.present[i]) continue;
    const e = index.lookup(keyOf(pool, i));
    if (e < 0) assert.unreachable(`${where}: key ${i} is missing`);
    if (taken[e]) assert.unreachable(`${where}: entry ${e} is found for two keys`);
    taken[e] = 1;
    if (!bytesEqual(index.keyAt(e, key), keyOf(pool, i))) assert.unreachable(`${where}: entry ${e} holds another key than ${i}`);
    if (index.segmentAt(e) !== model.seg[i] || index.offsetAt(e) !== model.off[i] || index.sizeAt(e) !== model.size[i]) {
      assert.unreachable(`${where}: entry ${e} value differs from the model's`);
    }
  }
}

/**
 * Random insert/update/delete/lookup against the model. The live set
 * drifts up to ~pool/2 keys (so the table grows many times) and back down.
 */
function runModel(core: WasmCore, ops: number, poolSize: number, seed: number): { grows: number; slotDoublings: number } {
  const pool = keyPool(poolSize, seed);
  const model = new Model(poolSize);
  const index = new KeyIndex(core);
  const next = rng(seed * 31 + 1);
  let grows = 0;
  let slotDoublings = 0;
  let memoryBytes = index.memoryBytes;
  let slotCount = core.tableSlotCount;
  for (let op = 0; op < ops; op++) {
    const i = next() % poolSize;
    const key = keyOf(pool, i);
    const roll = next() % 100;
    // First half grows the set (more inserts), second half shrinks it.
    const insertShare = op < ops / 2 ? 45 : 25;
    if (roll < insertShare) {
      const seg = next(), off = next(), size = roll % 10 === 0 ? 0 : next() % 100000;
      const replaced = index.set(key, seg, off, size);
      if (replaced !== (model.present[i] === 1)) assert.unreachable(`op ${op}: set returned ${replaced} for key ${i}`);
      if (replaced && (index.oldSegment !== model.seg[i] || index.oldOffset !== model.off[i] || index.oldSize !== model.size[i])) {
        assert.unreachable(`op ${op}: set reported the wrong old value for key ${i}`);
      }
      if (!model.present[i]) model.count++;
      model.present[i] = 1;
      model.seg[i] = seg;
      model.off[i] = off;
      model.size[i] = size;
    } else if (roll < 70) {
      const removed = index.remove(key);
      if (removed !== (model.present[i] === 1)) assert.unreachable(`op ${op}: remove returned ${removed} for key ${i}`);
      if (removed && (index.oldSegment !== model.seg[i] || index.oldOffset !== model.off[i] || index.oldSize !== model.size[i])) {
        assert.unreachable(`op ${op}: remove reported the wrong old value for key ${i}`);
      }
      if (removed) model.count--;
      model.present[i] = 0;
    } else if (roll < 85) {
      // find(): the get path's one call
      const found = index.find(key);
      if (found !== (model.present[i] === 1)) assert.unreachable(`op ${op}: find of key ${i} gave ${found}`);
      if (found && (index.foundSegment !== model.seg[i] || index.foundOffset !== model.off[i] || index.foundSize !== model.size[i])) {
        assert.unreachable(`op ${op}: find of key ${i} read a wrong value`);
      }
    } else {
      const e = index.lookup(key);
      if ((e >= 0) !== (model.present[i] === 1)) assert.unreachable(`op ${op}: lookup of key ${i} gave ${e}`);
      if (e >= 0 && (index.segmentAt(e) !== model.seg[i] || index.offsetAt(e) !== model.off[i] || index.sizeAt(e) !== model.size[i])) {
        assert.unreachable(`op ${op}: lookup of key ${i} read a wrong value`);
      }
    }
    if (index.memoryBytes !== memoryBytes) {
      grows++;
      memoryBytes = index.memoryBytes;
    }
    if (core.tableSlotCount !== slotCount) {
      slotDoublings++;
      slotCount = core.tableSlotCount;
    }
    if (op % 250000 === 249999) {
      checkAgainstModel(index, model, pool, `after op ${op}`);
      assert.is(core.tableVerify(true), 0, `after op ${op}: the table's invariants hold`);
    }
  }
  assert.is(index.count, model.count);
  checkAgainstModel(index, model, pool, "at the end");
  assert.is(core.tableVerify(true), 0, "at the end: the table's invariants hold");
  return { grows, slotDoublings };
}

test("KeyIndex agrees with a Map model over 1,000,000 random operations across many grows", () => {
  const { grows, slotDoublings } = runModel(WasmCore.create(), 1_000_000, 400_000, 17);
  assert.ok(grows >= 10, `the table grew ${grows} times`);
  assert.ok(slotDoublings >= 5, `the slot array doubled ${slotDoublings} times`);
});

test("KeyIndex agrees with the model under the debug build (wasm assertions on)", () => {
  const core = WasmCore.create({ debug: true });
  const { grows } = runModel(core, 200_000, 60_000, 5);
  assert.ok(grows >= 3, `the table grew ${grows} times`);
});

test("lookupMany() matches lookup() for present and absent keys, across batch boundaries", () => {
  const core = WasmCore.create();
  const index = new KeyIndex(core);
  const n = core.batchMax * 2 + 123;
  const pool = keyPool(n, 3);
  for (let i = 0; i < n; i += 2) index.set(keyOf(pool, i), i, i + 1, i + 2);
  const out = new Int32Array(n).fill(-7);
  index.lookupMany(pool, n, out);
  for (let i = 0; i < n; i++) {
    assert.is(out[i], index.lookup(keyOf(pool, i)), `key ${i}`);
    assert.is(out[i] >= 0, i % 2 === 0, `key ${i} presence`);
    if (out[i] >= 0) assert.is(index.offsetAt(out[i]), i + 1);
  }
  index.lookupMany(pool, 0, out); // n = 0 is a no-op
  assert.throws(() => index.lookupMany(pool, n + 1, new Int32Array(n + 1)), (e: unknown) => e instanceof TypeError);
  assert.throws(() => index.lookupMany(pool, n, new Int32Array(n - 1)), (e: unknown) => e instanceof TypeError);
  assert.throws(() => index.lookupMany(pool, n, new Uint32Array(n) as unknown as Int32Array), (e: unknown) => e instanceof TypeError);
});

test("setMany() bulk-loads, counts new keys and keeps the last value of a repeated key", () => {
  const core = WasmCore.create();
  const index = new KeyIndex(core);
  const n = 20_000;
  const pool = keyPool(n, 8);
  const values = new Uint32Array(n * 3);
  for (let i = 0; i < n; i++) values.set([i, i * 2, i * 3], i * 3);
  assert.is(index.setMany(pool, values, n), n);
  // Again with other values and half the keys repeated within the batch.
  const keys2 = new Uint8Array(n * 32);
  const values2 = new Uint32Array(n * 3);
  for (let i = 0; i < n; i++) {
    keys2.set(keyOf(pool, i >> 1), i * 32);
    values2.set([7, i, 9], i * 3);
  }
  assert.is(index.setMany(keys2, values2, n), 0);
  assert.is(index.count, n);
  for (let i = 0; i < n; i++) {
    const e = index.lookup(keyOf(pool, i));
    assert.ok(e >= 0);
    if (i < n / 2) assert.is(index.offsetAt(e), i * 2 + 1, `key ${i} keeps the later value`);
    else assert.is(index.offsetAt(e), i * 2, `key ${i} untouched`);
  }
});

test("keyAt() iterates every key once; entries stay dense after removals", () => {
  const index = new KeyIndex(WasmCore.create());
  const n = 5000;
  const pool = keyPool(n, 21);
  for (let i = 0; i < n; i++) index.set(keyOf(pool, i), 0, i, 0);
  for (let i = 0; i < n; i += 3) assert.ok(index.remove(keyOf(pool, i)));
  const seen = new Set<number>();
  for (let e = 0; e < index.count; e++) {
    const key = index.keyAt(e);
    const i = index.offsetAt(e);
    assert.ok(bytesEqual(key, keyOf(pool, i)), `entry ${e} holds key ${i}`);
    assert.not.ok(seen.has(i));
    seen.add(i);
  }
  assert.is(seen.size, n - Math.ceil(n / 3));
  assert.throws(() => index.keyAt(index.count), (e: unknown) => e instanceof RangeError);
  assert.throws(() => index.segmentAt(-1), (e: unknown) => e instanceof RangeError);
  assert.throws(() => index.sizeAt(1.5), (e: unknown) => e instanceof RangeError);
});

test("values: size 0 and u32 extremes round trip; out-of-range values are refused", () => {
  const index = new KeyIndex(WasmCore.create());
  const pool = keyPool(4, 1);
  assert.is(index.set(keyOf(pool, 0), 0, 0, 0), false);
  assert.is(index.set(keyOf(pool, 1), 0xffffffff, 0xffffffff, 0xffffffff), false);
  let e = index.lookup(keyOf(pool, 1));
  assert.is(index.segmentAt(e), 0xffffffff);
  assert.is(index.offsetAt(e), 0xffffffff);
  assert.is(index.sizeAt(e), 0xffffffff);
  e = index.lookup(keyOf(pool, 0));
  assert.is(index.sizeAt(e), 0);
  assert.is(index.set(keyOf(pool, 1), 1, 2, 3), true);
  assert.is(index.oldSegment, 0xffffffff);
  for (const bad of [-1, 2 ** 32, 1.5, NaN]) {
    assert.throws(() => index.set(keyOf(pool, 2), bad, 0, 0), (err: unknown) => err instanceof RangeError, `segment ${bad}`);
    assert.throws(() => index.set(keyOf(pool, 2), 0, 0, bad), (err: unknown) => err instanceof RangeError, `size ${bad}`);
  }
  assert.is(index.lookup(keyOf(pool, 2)), -1, "a refused set changes nothing");
  assert.is(index.count, 2);
});

test("keys that are not 32-byte Uint8Arrays are a TypeError before reaching wasm", () => {
  const index = new KeyIndex(WasmCore.create());
  const bad: unknown[] = [new Uint8Array(31), new Uint8Array(33), new Uint8Array(0), "a".repeat(32), new Uint16Array(16), new Array(32).fill(0), null, undefined, new ArrayBuffer(32)];
  for (const key of bad) {
    const k = key as Uint8Array;
    assert.throws(() => index.lookup(k), (e: unknown) => e instanceof TypeError, `lookup(${String(key)})`);
    assert.throws(() => index.set(k, 1, 2, 3), (e: unknown) => e instanceof TypeError, `set(${String(key)})`);
    assert.throws(() => index.remove(k), (e: unknown) => e instanceof TypeError, `remove(${String(key)})`);
  }
  assert.is(index.count, 0);
  assert.throws(() => index.lookupMany("x" as unknown as Uint8Array, 1, new Int32Array(1)), (e: unknown) => e instanceof TypeError);
});

test("views stay right across memory growth", () => {
  const core = WasmCore.create();
  const index = new KeyIndex(core);
  const pattern = new Uint8Array(4096).map((_, i) => (i * 7 + 3) & 0xff);
  core.u8.set(pattern, core.writeBufPtr);
  const before = core.u8;
  const n = 300_000;
  const pool = keyPool(n, 77);
  let growths = 0;
  let buffer = core.memory.buffer;
  for (let i = 0; i < n; i++) {
    index.set(keyOf(pool, i), i, i ^ 0x5555, i & 0xfff);
    if (core.memory.buffer !== buffer) {
      growths++;
      buffer = core.memory.buffer;
      // Right after a grow, every view is over the new buffer and reads the new entry.
      assert.is(core.u8.buffer, buffer);
      assert.is(core.u32.buffer, buffer);
      assert.is(core.dv.buffer, buffer);
      assert.is(core.u8.length, buffer.byteLength);
      const e = index.lookup(keyOf(pool, i));
      assert.is(index.offsetAt(e), i ^ 0x5555);
      assert.ok(bytesEqual(index.keyAt(e), keyOf(pool, i)));
    }
  }
  assert.ok(growths >= 3, `memory grew ${growths} times`);
  assert.is(before.length, 0, "the view taken before growth is detached");
  assert.ok(bytesEqual(core.u8.subarray(core.writeBufPtr, core.writeBufPtr + 4096), pattern), "the write buffer kept its bytes");
  for (let i = 0; i < n; i += 997) {
    const e = index.lookup(keyOf(pool, i));
    assert.is(index.segmentAt(e), i);
    assert.is(index.sizeAt(e), i & 0xfff);
  }
});

test("capacityHint presizes: a bulk load of that many keys does not grow the table", () => {
  const n = 100_000;
  const index = new KeyIndex(WasmCore.create(), n);
  const bytes = index.memoryBytes;
  const pool = keyPool(n, 4);
  for (let i = 0; i < n; i++) index.set(keyOf(pool, i), 1, i, 1);
  assert.is(index.memoryBytes, bytes);
  assert.ok(bytes / n < 56, `${(bytes / n).toFixed(1)} bytes per key`);
});

test("clear() empties the index, which then works as new", () => {
  const index = new KeyIndex(WasmCore.create());
  const pool = keyPool(3000, 9);
  for (let i = 0; i < 3000; i++) index.set(keyOf(pool, i), 1, i, 2);
  index.clear();
  assert.is(index.count, 0);
  for (let i = 0; i < 3000; i++) assert.is(index.lookup(keyOf(pool, i)), -1);
  assert.is(index.set(keyOf(pool, 5), 1, 5, 2), false);
  assert.is(index.count, 1);
});

test("the debug build's assertions stop a wasm call that would leave its regions, with a message", () => {
  // The public API validates before calling wasm, so reach the raw exports
  // (private to src/wasm.ts) to play a buggy caller.
  type Raw = { exports: { crc32(p: number, l: number, s: number): number; tableLookupMany(n: number): void; tableLookup(): number } };
  const debug = WasmCore.create({ debug: true });
  const raw = (debug as unknown as Raw).exports;
  assert.throws(() => raw.crc32(debug.u8.length - 4, 100, 0), /aborted: crc32: range outside memory/);
  assert.throws(() => raw.tableLookup(), /aborted: table used before tableInit/);
  new KeyIndex(debug);
  assert.throws(() => raw.tableLookupMany(debug.batchMax + 1), /aborted/);
  // The release build has no such checks, but wasm still traps outside memory.
  const release = WasmCore.create();
  const rawRelease = (release as unknown as Raw).exports;
  assert.throws(() => rawRelease.crc32(release.u8.length - 4, 100, 0), (e: unknown) => e instanceof WebAssembly.RuntimeError);
});

test("one KeyIndex per WasmCore", () => {
  const core = WasmCore.create();
  new KeyIndex(core);
  assert.throws(() => new KeyIndex(core), /already has a KeyIndex/);
});

// ---------------------------------------------------------------------------
// Checkpoints

/** Writes `index` as a checkpoint at `path` and returns the bytes written. */
function checkpointTo(fs: FileSystem, path: string, index: KeyIndex, meta: CheckpointMeta): number {
  const f = fs.open(path, "w+");
  try {
    const n = index.writeCheckpoint(f, meta);
    f.datasync();
    return n;
  } finally {
    f.close();
  }
}

function loadFrom(fs: FileSystem, path: string, core = WasmCore.create()) {
  const f = fs.open(path, "r");
  try {
    return KeyIndex.loadCheckpoint(core, f);
  } finally {
    f.close();
  }
}

function readAll(fs: FileSystem, path: string): Uint8Array {
  const f = fs.open(path, "r");
  try {
    const out = new Uint8Array(f.size());
    let done = 0;
    while (done < out.length) done += f.read(out.subarray(done), done);
    return out;
  } finally {
    f.close();
  }
}

function writeAll(fs: FileSystem, path: string, bytes: Uint8Array): void {
  const f = fs.open(path, "w+");
  try {
    f.write(bytes, 0);
  } finally {
    f.close();
  }
}

/** Recomputes a checkpoint's body and header CRCs after a deliberate edit, so only the check under test can catch it. */
function resealCheckpoint(bytes: Uint8Array): void {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  dv.setUint32(64, crc32(bytes.subarray(CHECKPOINT_HEADER_SIZE)), true);
  dv.setUint32(124, crc32(bytes.subarray(0, 124)), true);
}

function throwsIntegrity(fn: () => unknown, path: string, pattern: RegExp, what: string): void {
  try {
    fn();
  } catch (e) {
    assert.instance(e, IntegrityError, `${what}: ${e}`);
    assert.is((e as IntegrityError).file, path, `${what}: error names the file`);
    assert.ok((e as Error).message.includes(path), `${what}: message names the file: ${(e as Error).message}`);
    assert.ok(pattern.test((e as Error).message), `${what}: ${(e as Error).message}`);
    assert.type((e as IntegrityError).offset, "number");
    return;
  }
  assert.unreachable(`${what}: expected IntegrityError`);
}

for (const c of adapterCases({ prefix: "segstore-keyindex-" })) {
  test(`${c.name}: checkpoint round trip keeps every key, value and the meta; the loaded index keeps working`, () => {
    try {
      const core = WasmCore.create();
      const index = new KeyIndex(core);
      const n = 50_000;
      const pool = keyPool(n + 1000, 12);
      for (let i = 0; i < n; i++) index.set(keyOf(pool, i), i % 97, i * 41, i % 5 === 0 ? 0 : i);
      for (let i = 0; i < n; i += 4) index.remove(keyOf(pool, i));
      const meta = { segment: 12, offset: 4096, txid: 2n ** 63n + 5n };
      const path = `${c.root}/index.12`;
      const written = checkpointTo(c.fs, path, index, meta);
      assert.is(c.fs.stat(path)?.size, written);
      assert.equal(KeyIndex.readCheckpointMeta(c.fs.open(path, "r")), meta);

      const loaded = loadFrom(c.fs, path);
      assert.equal(loaded.meta, meta);
      const back = loaded.index;
      assert.is(back.count, index.count);
      const key = new Uint8Array(32);
      for (let e = 0; e < index.count; e++) {
        // Loaded as is: the same entry numbers hold the same keys and values.
        assert.ok(bytesEqual(back.keyAt(e, key), index.keyAt(e)), `entry ${e}`);
        assert.is(back.offsetAt(e), index.offsetAt(e));
        assert.is(back.sizeAt(e), index.sizeAt(e));
      }
      for (let i = 0; i < n; i++) {
        const e = back.lookup(keyOf(pool, i));
        assert.is(e >= 0, i % 4 !== 0, `key ${i}`);
        if (e >= 0) assert.is(back.segmentAt(e), i % 97);
      }
      // It grows and deletes from there.
      for (let i = n; i < n + 1000; i++) assert.is(back.set(keyOf(pool, i), 1, i, 1), false);
      for (let i = 1; i < n; i += 4) assert.ok(back.remove(keyOf(pool, i)));
      assert.is(back.count, index.count + 1000 - n / 4);
      const e = back.lookup(keyOf(pool, n + 999));
      assert.is(back.offsetAt(e), n + 999);
    } finally {
      c.cleanup();
    }
  });
}

test("checkpoint of an empty index round trips", () => {
  const [c] = adapterCases({ prefix: "segstore-keyindex-" });
  try {
    const path = `${c.root}/index.0`;
    checkpointTo(c.fs, path, new KeyIndex(WasmCore.create()), { segment: 0, offset: 8, txid: 0n });
    const { index, meta } = loadFrom(c.fs, path);
    assert.is(index.count, 0);
    assert.equal(meta, { segment: 0, offset: 8, txid: 0n });
    assert.is(index.lookup(new Uint8Array(32)), -1);
  } finally {
    c.cleanup();
  }
});

for (const c of adapterCases({ prefix: "segstore-keyindex-" })) {
  test(`${c.name}: damaged checkpoints are refused with IntegrityError naming the file, loading nothing`, () => {
    try {
      const index = new KeyIndex(WasmCore.create());
      const pool = keyPool(3000, 6);
      for (let i = 0; i < 3000; i++) index.set(keyOf(pool, i), 1, i, 100);
      const good = `${c.root}/index.good`;
      checkpointTo(c.fs, good, index, { segment: 1, offset: 99, txid: 7n });
      const original = readAll(c.fs, good);
      const path = `${c.root}/index.bad`;
      const entriesEnd = CHECKPOINT_HEADER_SIZE + 3000 * 44;

      const cases: [string, (b: Uint8Array) => Uint8Array, RegExp][] = [
        ["a flipped bit in an entry", (b) => { b[CHECKPOINT_HEADER_SIZE + 1000] ^= 0x10; return b; }, /body CRC/],
        ["a flipped bit in a slot", (b) => { b[entriesEnd + 77] ^= 0x01; return b; }, /body CRC/],
        ["a flipped bit in the last byte", (b) => { b[b.length - 1] ^= 0x80; return b; }, /body CRC/],
        ["a flipped bit in the header's count", (b) => { b[24] ^= 0x02; return b; }, /header CRC/],
        ["a flipped bit in the header CRC", (b) => { b[125] ^= 0x04; return b; }, /header CRC/],
        ["wrong magic", (b) => { b.set(new TextEncoder().encode("DSEGMENT"), 0); return b; }, /magic/],
        ["truncated by one byte", (b) => b.subarray(0, b.length - 1), /truncated/],
        ["truncated inside the header", (b) => b.subarray(0, 100), /shorter than/],
        ["empty", (b) => b.subarray(0, 0), /shorter than/],
        ["one byte too long", (b) => { const l = new Uint8Array(b.length + 1); l.set(b); return l; }, /header says/],
        ["another layout version, resealed", (b) => { b[12] = 99; resealCheckpoint(b); return b; }, /layout 99/],
        ["another checkpoint version, resealed", (b) => { b[8] = 2; resealCheckpoint(b); return b; }, /version 2/],
        ["a slot pointing at another entry, resealed", (b) => {
          // Find a non-empty slot and point it at a different live entry.
          const dv = new DataView(b.buffer, b.byteOffset);
          for (let p = entriesEnd; p < b.length; p += 4) {
            const s = dv.getUint32(p, true);
            if (s !== 0) {
              const e = (s & 0x7ffffff) - 1;
              dv.setUint32(p, (s & ~0x7ffffff) | ((e + 1) % 3000 + 1), true);
              break;
            }
          }
          resealCheckpoint(b);
          return b;
        }, /does not verify|another hash/],
        ["more entries than the slots allow, resealed", (b) => {
          const dv = new DataView(b.buffer, b.byteOffset);
          dv.setUint32(28, 11, true); // 2^11 slots cannot hold 3000 at load 0.8
          dv.setBigUint64(56, 4n << 11n, true);
          const cut = b.subarray(0, entriesEnd + (4 << 11));
          resealCheckpoint(cut);
          return cut;
        }, /does not fit/],
      ];
      for (const [what, damage, pattern] of cases) {
        writeAll(c.fs, path, damage(original.slice()));
        const core = WasmCore.create();
        throwsIntegrity(() => loadFrom(c.fs, path, core), path, pattern, what);
        // Nothing was loaded: the core is free for a rebuilt index, empty.
        const rebuilt = new KeyIndex(core);
        assert.is(rebuilt.count, 0, `${what}: a new index on the same core is empty`);
        assert.is(rebuilt.lookup(keyOf(pool, 0)), -1);
      }
      // The FaultyFs's own media error, flipped in place.
      if (c.name === "faulty") {
        c.fs.flipBit(good, CHECKPOINT_HEADER_SIZE + 5, 3);
        throwsIntegrity(() => loadFrom(c.fs, good), good, /body CRC/, "FaultyFs.flipBit");
      }
    } finally {
      c.cleanup();
    }
  });
}

test.run();
