/**
 * Store engine suite: the API of DESIGN.md, transactions, checkpoints,
 * replay, compaction and the recovery table of src/store.ts, run against
 * the runtime's adapter and the faulty in-memory one (one suite, many
 * backends). Crash enumeration lives in 90.crash.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { adapterCases, type AdapterCase } from "./_support/adapters.ts";
import { Store, type OpenOptions } from "../src/store.ts";
import {
  IntegrityError, LockedError, MAX_OBJECT_SIZE, NotFoundError, StateError, StorageError, StoreFormatError,
} from "../src/format.ts";
import type { FileSystem } from "../src/fs.ts";
import { FaultyFs } from "../adapters/faulty.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A deterministic 32-byte id for n (the seed's tests used '%-32d' % n). */
function key(n: number): Uint8Array {
  return enc.encode(String(n).padEnd(32, " "));
}
function val(s: string): Uint8Array {
  return enc.encode(s);
}
function text(v: Uint8Array | undefined): string | undefined {
  return v === undefined ? undefined : dec.decode(v);
}

function openStore(c: AdapterCase, options: OpenOptions = {}, name = "store"): Store {
  return Store.open(`${c.root}/${name}`, { fs: c.fs, ...options });
}

/** Reads a whole file through the adapter. */
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
function checkpointFiles(fs: FileSystem, root: string): string[] {
  return fs.readdir(root).filter((n) => /^(index|hints)\.\d+$/.test(n));
}
function segmentPaths(fs: FileSystem, root: string): string[] {
  const out: { n: number; p: string }[] = [];
  for (const d of fs.readdir(`${root}/data`)) {
    for (const f of fs.readdir(`${root}/data/${d}`)) out.push({ n: Number(f), p: `${root}/data/${d}/${f}` });
  }
  return out.sort((a, b) => a.n - b.n).map((x) => x.p);
}
function assertNoTemp(fs: FileSystem, root: string): void {
  assert.equal(fs.readdir(root).filter((n) => n.endsWith(".tmp")), [], "no *.tmp left");
}

/** The whole content of a store as a sorted map, for equality checks. */
function snapshot(store: Store): Map<string, string> {
  const m = new Map<string, string>();
  const ids = store.list().map((id) => dec.decode(id)).sort();
  for (const id of ids) m.set(id, text(store.get(enc.encode(id)))!);
  return m;
}

function each(name: string, fn: (c: AdapterCase) => void): void {
  for (const kind of ["runtime", "faulty"] as const) {
    test(`${kind === "runtime" ? "runtime fs" : "faulty fs"}: ${name}`, () => {
      const cases = adapterCases({ prefix: "segstore-store-" });
      const c = kind === "runtime" ? cases[0] : cases[1];
      const other = kind === "runtime" ? cases[1] : cases[0];
      other.cleanup();
      try {
        fn(c);
      } finally {
        c.cleanup();
      }
    });
  }
}

// ---------------------------------------------------------------------------
// The seed's two tests

each("seed test1: 100 puts, delete one, commit, reopen, the rest intact", (c) => {
  const store = openStore(c, { create: true });
  for (let x = 0; x < 100; x++) store.put(key(x), val("SOMEDATA"));
  assert.is(text(store.get(key(50))), "SOMEDATA");
  assert.is(store.delete(key(50)), true);
  assert.is(store.get(key(50)), undefined);
  store.commit();
  store.close();
  const store2 = openStore(c);
  assert.is(store2.get(key(50)), undefined);
  for (let x = 0; x < 100; x++) if (x !== 50) assert.is(text(store2.get(key(x))), "SOMEDATA");
  assert.is(store2.stats().keys, 99);
  store2.close();
});

each("seed test2: two sequential transactions", (c) => {
  const store = openStore(c, { create: true });
  store.put(key(0), val("foo"));
  store.put(key(1), val("foo"));
  assert.is(store.commit(), 1n);
  store.delete(key(0));
  store.put(key(1), val("bar"));
  assert.is(store.commit(), 2n);
  assert.is(text(store.get(key(1))), "bar");
  assert.is(store.get(key(0)), undefined);
  store.close();
});

// ---------------------------------------------------------------------------
// Transactions

each("rollback() discards puts, overwrites and deletes, in memory and on disk", (c) => {
  const store = openStore(c, { create: true });
  store.put(key(1), val("one"));
  store.put(key(2), val("two"));
  store.commit();
  const sizeBefore = store.stats().totalBytes;
  store.put(key(1), val("uno"));
  store.delete(key(2));
  store.put(key(3), val("three"));
  assert.is(text(store.get(key(1))), "uno", "read-your-writes");
  assert.is(store.has(key(2)), false);
  store.rollback();
  assert.is(text(store.get(key(1))), "one");
  assert.is(text(store.get(key(2))), "two");
  assert.is(store.has(key(3)), false);
  assert.is(store.stats().totalBytes, sizeBefore);
  assert.is(store.commit(), 1n, "nothing to commit returns the last id");
  store.close();
  const again = openStore(c);
  assert.equal([...snapshot(again)], [[dec.decode(key(1)), "one"], [dec.decode(key(2)), "two"]]);
  again.close();
});

each("uncommitted writes are gone after close and reopen", (c) => {
  const store = openStore(c, { create: true });
  store.put(key(1), val("kept"));
  store.commit();
  store.put(key(2), val("lost"));
  store.close();
  const again = openStore(c);
  assert.is(text(again.get(key(1))), "kept");
  assert.is(again.has(key(2)), false);
  again.close();
});

each("getMany returns values in the order asked, undefined for missing", (c) => {
  const store = openStore(c, { create: true });
  for (let i = 0; i < 50; i++) store.put(key(i), val(`v${i}`));
  store.commit();
  const ids = [key(7), key(999), key(3), key(4), key(5), key(49)];
  assert.equal(store.getMany(ids).map(text), ["v7", undefined, "v3", "v4", "v5", "v49"]);
  store.close();
});

each("list() gives every live id; stats() counts them", (c) => {
  const store = openStore(c, { create: true });
  for (let i = 0; i < 20; i++) store.put(key(i), val("x"));
  store.delete(key(5));
  store.commit();
  const ids = store.list().map((k) => dec.decode(k).trim()).sort((a, b) => Number(a) - Number(b));
  assert.equal(ids, Array.from({ length: 20 }, (_, i) => String(i)).filter((s) => s !== "5"));
  const st = store.stats();
  assert.is(st.keys, 19);
  assert.is(st.lastTxid, 1n);
  assert.ok(st.indexBytes > 0);
  store.close();
});

each("empty values and a MAX_OBJECT_SIZE value round-trip; one byte more is refused", (c) => {
  const store = openStore(c, { create: true });
  store.put(key(1), new Uint8Array(0));
  const big = new Uint8Array(MAX_OBJECT_SIZE);
  for (let i = 0; i < big.length; i += 4096) big[i] = i & 255;
  store.put(key(2), big);
  assert.throws(() => store.put(key(3), new Uint8Array(MAX_OBJECT_SIZE + 1)), (e: unknown) => e instanceof RangeError && /putBlob/.test((e as Error).message));
  store.commit();
  store.close();
  const again = openStore(c);
  assert.is(again.get(key(1))!.length, 0);
  const got = again.get(key(2))!;
  assert.is(got.length, MAX_OBJECT_SIZE);
  assert.ok(got.every((b, i) => b === big[i]));
  again.close();
});

// ---------------------------------------------------------------------------
// Checkpoints and replay

each("reopen with a checkpoint replays nothing; without one, the log rebuilds the same index", (c) => {
  const store = openStore(c, { create: true, maxSegmentSize: 4096 });
  for (let i = 0; i < 300; i++) store.put(key(i), val(`value ${i}`.repeat(3)));
  store.commit();
  for (let i = 0; i < 300; i += 3) store.delete(key(i));
  for (let i = 1; i < 300; i += 3) store.put(key(i), val(`new ${i}`));
  store.commit();
  const before = snapshot(store);
  store.close();
  assert.ok(checkpointFiles(c.fs, `${c.root}/store`).length === 2, "close wrote index.N and hints.N");
  const withCp = openStore(c);
  assert.is(withCp.stats().replayBytes, 0);
  assert.equal(snapshot(withCp), before);
  withCp.close();
  for (const name of checkpointFiles(c.fs, `${c.root}/store`)) c.fs.unlink(`${c.root}/store/${name}`);
  const rebuilt = openStore(c);
  assert.ok(rebuilt.stats().replayBytes > 0);
  assert.equal(snapshot(rebuilt), before);
  assert.is(rebuilt.stats().lastTxid, 2n);
  rebuilt.close();
  assertNoTemp(c.fs, `${c.root}/store`);
});

each("unusable checkpoints (junk, garbage appended, renamed newer) are ignored and the log replayed", (c) => {
  const root = `${c.root}/store`;
  const store = openStore(c, { create: true, maxSegmentSize: 2048 });
  for (let i = 0; i < 100; i++) store.put(key(i), val(`v${i}`));
  store.commit();
  store.close();
  const expected = (() => {
    const s = openStore(c);
    const m = snapshot(s);
    s.close();
    return m;
  })();
  const names = checkpointFiles(c.fs, root);
  const indexName = names.find((n) => n.startsWith("index."))!;
  const hintsName = names.find((n) => n.startsWith("hints."))!;
  const original = readAll(c.fs, `${root}/${indexName}`);
  const damage: [string, () => void][] = [
    ["9 junk bytes", () => writeAll(c.fs, `${root}/${indexName}`, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]))],
    ["garbage appended", () => {
      const g = new Uint8Array(original.length + 100);
      g.set(original);
      g.fill(0xab, original.length);
      writeAll(c.fs, `${root}/${indexName}`, g);
    }],
    ["hints junk", () => writeAll(c.fs, `${root}/${hintsName}`, new Uint8Array([0xc1, 0xc1, 0xc1]))],
    ["renamed to a newer number", () => {
      c.fs.rename(`${root}/${indexName}`, `${root}/index.99999`);
      c.fs.rename(`${root}/${hintsName}`, `${root}/hints.99999`);
    }],
    ["all deleted", () => {
      for (const n of checkpointFiles(c.fs, root)) c.fs.unlink(`${root}/${n}`);
    }],
  ];
  for (const [what, doDamage] of damage) {
    doDamage();
    const s = openStore(c);
    assert.ok(s.stats().replayBytes > 0, `${what}: replayed`);
    assert.equal(snapshot(s), expected, what);
    s.close(); // writes a fresh checkpoint for the next round
    const fresh = checkpointFiles(c.fs, root);
    assert.ok(fresh.includes(indexName) && fresh.includes(hintsName), `${what}: checkpoint rewritten`);
    writeAll(c.fs, `${root}/${indexName}`, readAll(c.fs, `${root}/${indexName}`));
  }
  assertNoTemp(c.fs, root);
});

each("a checkpoint is written automatically once the log passes the bound", (c) => {
  const store = openStore(c, { create: true, checkpointBytes: 10_000 });
  let maxReplay = 0;
  for (let i = 0; i < 400; i++) {
    store.put(key(i % 20), new Uint8Array(100));
    store.commit();
    maxReplay = Math.max(maxReplay, store.stats().replayBytes);
  }
  const cp = store.stats().checkpoint;
  assert.ok(cp !== null, "a checkpoint exists before close");
  // The bound: the larger of checkpointBytes and twice the checkpoint's size, plus one commit's records.
  const cpSize = c.fs.stat(`${c.root}/store/index.${cp!.segment}`)!.size;
  assert.ok(maxReplay <= Math.max(10_000, 2 * cpSize) + 200, `replay stays bounded (max ${maxReplay}, checkpoint ${cpSize} B)`);
  store.close();
});

// ---------------------------------------------------------------------------
// Segments, compaction and deletes that must stay deleted

each("overwrites and deletes across many segments, compaction, checkpoint loss: nothing lost, nothing back", (c) => {
  const root = `${c.root}/store`;
  const store = openStore(c, { create: true, maxSegmentSize: 2048, autoCompact: false });
  const model = new Map<number, string>();
  let rnd = 12345;
  const next = () => (rnd = (rnd * 1103515245 + 12345) & 0x7fffffff);
  for (let round = 0; round < 30; round++) {
    for (let j = 0; j < 20; j++) {
      const k = next() % 60;
      if (next() % 3 === 0) {
        store.delete(key(k));
        model.delete(k);
      } else {
        const v = `r${round}j${j}`.repeat(1 + (next() % 5));
        store.put(key(k), val(v));
        model.set(k, v);
      }
    }
    store.commit();
  }
  const segmentsBefore = segmentPaths(c.fs, root).length;
  assert.ok(segmentsBefore > 5, "many segments");
  const progress: [number, number][] = [];
  const result = store.compact({ onProgress: (done, total) => progress.push([done, total]) });
  assert.ok(result.segmentsCompacted > 0, "compaction freed segments");
  // Progress: reported, never going back, never past its bound, ending at what was copied.
  assert.ok(progress.length > 0, "onProgress was called");
  for (let i = 0; i < progress.length; i++) {
    const [done, total] = progress[i]!;
    assert.ok(done <= total, `step ${i}: ${done} copied of at most ${total}`);
    if (i > 0) assert.ok(done >= progress[i - 1]![0], `step ${i}: progress went back`);
  }
  assert.is(progress.at(-1)![0], result.bytesCopied);
  assert.ok(segmentPaths(c.fs, root).length < segmentsBefore);
  const check = (s: Store, what: string) => {
    for (let k = 0; k < 60; k++) assert.is(text(s.get(key(k))), model.get(k), `${what}: key ${k}`);
    assert.is(s.stats().keys, model.size, what);
  };
  check(store, "after compact");
  store.close();
  for (const n of checkpointFiles(c.fs, root)) c.fs.unlink(`${root}/${n}`);
  const replayed = openStore(c, { autoCompact: false });
  check(replayed, "after checkpoint loss and replay");
  replayed.close();
});

each("PUT A in one segment, DELETE A in a later one, only the later compacted, checkpoint deleted: A stays deleted", (c) => {
  const root = `${c.root}/store`;
  const store = openStore(c, { create: true, maxSegmentSize: 1024, autoCompact: false, compactRatio: 1 });
  store.put(key(1), new Uint8Array(600)); // segment 0
  store.commit();
  for (let i = 0; i < 3; i++) {
    store.put(key(100 + i), new Uint8Array(600)); // fills later segments
    store.commit();
  }
  store.delete(key(1));
  store.commit();
  for (let i = 0; i < 3; i++) {
    store.put(key(200 + i), new Uint8Array(600));
    store.commit();
  }
  store.close();
  assert.ok(c.fs.stat(`${root}/data/0/0`) !== undefined, "segment 0 holds the PUT");
  // Delete segment 0's siblings' sparseness: force compaction of everything but segment 0 by making 0 look full.
  const s2 = openStore(c, { autoCompact: false, compactRatio: 1 });
  s2.compact();
  assert.is(s2.has(key(1)), false);
  s2.close();
  for (const n of checkpointFiles(c.fs, root)) c.fs.unlink(`${root}/${n}`);
  const s3 = openStore(c);
  assert.is(s3.has(key(1)), false, "A stays deleted after full replay");
  s3.close();
});

each("PUT/DEL/PUT/DEL of one key in one segment, compacted, replayed: stays deleted", (c) => {
  const root = `${c.root}/store`;
  const store = openStore(c, { create: true, maxSegmentSize: 4096, autoCompact: false, compactRatio: 1 });
  store.put(key(1), val("a"));
  store.commit();
  store.delete(key(1));
  store.commit();
  store.put(key(1), val("b"));
  store.commit();
  store.delete(key(1));
  store.commit();
  for (let i = 0; i < 10; i++) {
    store.put(key(50 + i), new Uint8Array(500));
    store.commit();
  }
  store.compact();
  assert.is(store.has(key(1)), false);
  store.close();
  for (const n of checkpointFiles(c.fs, root)) c.fs.unlink(`${root}/${n}`);
  const s = openStore(c);
  assert.is(s.has(key(1)), false);
  for (let i = 0; i < 10; i++) assert.is(s.get(key(50 + i))!.length, 500);
  s.close();
});

each("overwrite chain then delete, middle segment compacted first: no resurrection after replay", (c) => {
  const root = `${c.root}/store`;
  const store = openStore(c, { create: true, maxSegmentSize: 1024, autoCompact: false, compactRatio: 1 });
  const filler = (n: number) => {
    for (let i = 0; i < 2; i++) {
      store.put(key(1000 + n * 10 + i), new Uint8Array(500));
      store.commit();
    }
  };
  store.put(key(7), val("v1"));
  store.commit();
  filler(1);
  store.put(key(7), val("v2"));
  store.commit();
  filler(2);
  store.delete(key(7));
  store.commit();
  filler(3);
  store.compact();
  store.close();
  for (const n of checkpointFiles(c.fs, root)) c.fs.unlink(`${root}/${n}`);
  const s = openStore(c);
  assert.is(s.has(key(7)), false);
  s.close();
});

each("auto compaction in commit keeps disk use bounded under overwrites", (c) => {
  const root = `${c.root}/store`;
  const store = openStore(c, { create: true, maxSegmentSize: 8192, checkpointBytes: 20_000 });
  for (let round = 0; round < 60; round++) {
    for (let k = 0; k < 10; k++) store.put(key(k), new Uint8Array(200).fill(round));
    store.commit();
  }
  const st = store.stats();
  assert.ok(st.totalBytes < 20 * st.liveBytes + 40_000, `disk ${st.totalBytes} stays near live ${st.liveBytes}`);
  for (let k = 0; k < 10; k++) assert.is(store.get(key(k))![0], 59);
  store.close();
  const s = openStore(c);
  for (let k = 0; k < 10; k++) assert.is(s.get(key(k))![0], 59);
  s.close();
  assertNoTemp(c.fs, root);
});

// ---------------------------------------------------------------------------
// Corruption and missing files

each("four bytes overwritten inside one entry: get raises IntegrityError naming segment and offset; others read", (c) => {
  const root = `${c.root}/store`;
  const store = openStore(c, { create: true });
  for (let i = 0; i < 10; i++) store.put(key(i), val(`value-${i}-`.repeat(4)));
  store.commit();
  store.close();
  const seg = segmentPaths(c.fs, root)[0];
  const bytes = readAll(c.fs, seg);
  const text0 = dec.decode(bytes);
  const at = text0.indexOf("value-5-") + 2;
  bytes.set([0x58, 0x58, 0x58, 0x58], at);
  writeAll(c.fs, seg, bytes);
  const s = openStore(c);
  assert.throws(() => s.get(key(5)), (e: unknown) => e instanceof IntegrityError && e.segment === 0 && typeof e.offset === "number" && /segment 0 at offset \d+/.test((e as Error).message));
  for (let i = 0; i < 10; i++) if (i !== 5) assert.is(text(s.get(key(i))), `value-${i}-`.repeat(4));
  s.close();
});

each("a middle segment file deleted: its objects raise a clear IntegrityError", (c) => {
  const root = `${c.root}/store`;
  const store = openStore(c, { create: true, maxSegmentSize: 1024 });
  for (let i = 0; i < 12; i++) {
    store.put(key(i), new Uint8Array(300).fill(i));
    store.commit();
  }
  store.close();
  const segs = segmentPaths(c.fs, root);
  assert.ok(segs.length >= 3);
  c.fs.unlink(segs[1]);
  const s = openStore(c);
  let missing = 0;
  for (let i = 0; i < 12; i++) {
    try {
      assert.is(s.get(key(i))![0], i);
    } catch (e) {
      assert.instance(e, IntegrityError);
      assert.match((e as Error).message, /segment 1 is missing/);
      missing++;
    }
  }
  assert.ok(missing > 0);
  s.close();
});

each("the newest segment deleted or corrupted: the store falls back to the previous commit", (c) => {
  const root = `${c.root}/store`;
  const store = openStore(c, { create: true, maxSegmentSize: 1024 });
  for (let i = 0; i < 8; i++) {
    store.put(key(i), new Uint8Array(400).fill(i));
    store.commit();
  }
  store.close();
  for (const n of checkpointFiles(c.fs, root)) c.fs.unlink(`${root}/${n}`);
  const segs = segmentPaths(c.fs, root);
  // corrupt the last record of the newest segment
  const last = segs[segs.length - 1];
  const bytes = readAll(c.fs, last);
  bytes[bytes.length - 3] ^= 0xff;
  writeAll(c.fs, last, bytes);
  const s = openStore(c);
  assert.is(s.has(key(7)), false, "the newest commit is gone");
  for (let i = 0; i < 7; i++) assert.is(s.get(key(i))![0], i);
  s.put(key(7), new Uint8Array(1).fill(7));
  s.commit();
  s.close();
  const s2 = openStore(c);
  assert.is(s2.get(key(7))![0], 7, "writable after the fallback");
  s2.close();
  // delete the newest segment entirely
  for (const n of checkpointFiles(c.fs, root)) c.fs.unlink(`${root}/${n}`);
  const segs2 = segmentPaths(c.fs, root);
  c.fs.unlink(segs2[segs2.length - 1]);
  const s3 = openStore(c);
  assert.ok(s3.stats().keys >= 5);
  s3.close();
});

// ---------------------------------------------------------------------------
// Opening: bad paths, versions, locks, options

each("bad paths: missing store, a file, a non-store directory, create over a non-empty directory", (c) => {
  assert.throws(() => openStore(c, {}, "nope"), (e: unknown) => e instanceof NotFoundError && (e as Error).message.includes("nope"));
  writeAll(c.fs, `${c.root}/afile`, val("x"));
  assert.throws(() => openStore(c, {}, "afile"), (e: unknown) => e instanceof StoreFormatError && (e as Error).message.includes("afile"));
  assert.throws(() => openStore(c, { create: true }, "afile"), (e: unknown) => e instanceof StoreFormatError);
  c.fs.mkdir(`${c.root}/notastore`);
  writeAll(c.fs, `${c.root}/notastore/x`, val("x"));
  assert.throws(() => openStore(c, {}, "notastore"), (e: unknown) => e instanceof StoreFormatError && /not a segstore store/.test((e as Error).message));
  assert.throws(() => openStore(c, { create: true }, "notastore"), (e: unknown) => e instanceof StoreFormatError && /not empty/.test((e as Error).message));
});

each("create makes missing parent directories", (c) => {
  const s = openStore(c, { create: true }, "a/b/store");
  s.put(key(1), val("x"));
  s.commit();
  s.close();
  const again = openStore(c, {}, "a/b/store");
  assert.is(text(again.get(key(1))), "x");
  again.close();
});

each("config of another version or with unknown keys is refused with StoreFormatError", (c) => {
  const root = `${c.root}/store`;
  openStore(c, { create: true }).close();
  const config = dec.decode(readAll(c.fs, `${root}/config`));
  writeAll(c.fs, `${root}/config`, val(config.replace("version = 1", "version = 3")));
  assert.throws(() => openStore(c), (e: unknown) => e instanceof StoreFormatError && /version is 3: this build reads version 1/.test((e as Error).message));
  writeAll(c.fs, `${root}/config`, val(config + "colour = blue\n"));
  assert.throws(() => openStore(c), (e: unknown) => e instanceof StoreFormatError && /unknown key "colour"/.test((e as Error).message));
  writeAll(c.fs, `${root}/config`, val(config));
  openStore(c).close();
});

each("a second open gets LockedError; readOnly opens share; after close it opens", (c) => {
  const a = openStore(c, { create: true });
  a.put(key(1), val("x"));
  a.commit();
  assert.throws(() => openStore(c), (e: unknown) => e instanceof LockedError && (e as Error).message.includes("locked"));
  assert.throws(() => openStore(c, { readOnly: true }), (e: unknown) => e instanceof LockedError);
  a.close();
  const r1 = openStore(c, { readOnly: true });
  const r2 = openStore(c, { readOnly: true });
  assert.is(text(r1.get(key(1))), "x");
  assert.throws(() => r1.put(key(2), val("y")), (e: unknown) => e instanceof StateError && (e as StateError).code === "EREADONLY");
  assert.throws(() => openStore(c), (e: unknown) => e instanceof LockedError);
  r1.close();
  r2.close();
  openStore(c).close();
});

each("bad arguments: wrong key length, non-bytes value, unknown option", (c) => {
  const s = openStore(c, { create: true });
  assert.throws(() => s.put(new Uint8Array(31), val("x")), (e: unknown) => e instanceof TypeError);
  assert.throws(() => s.get(new Uint8Array(33)), (e: unknown) => e instanceof TypeError);
  assert.throws(() => s.put(key(1), "text" as unknown as Uint8Array), (e: unknown) => e instanceof TypeError);
  assert.throws(() => openStore(c, { creat: true } as unknown as OpenOptions), (e: unknown) => e instanceof TypeError && /unknown option "creat"/.test((e as Error).message));
  s.close();
});

each("after close() every method throws StateError ECLOSED; close() is idempotent", (c) => {
  const s = openStore(c, { create: true });
  s.close();
  s.close();
  for (const call of [() => s.get(key(1)), () => s.put(key(1), val("x")), () => s.commit(), () => s.list(), () => s.stats(), () => s.delete(key(1)), () => s.has(key(1))]) {
    assert.throws(call, (e: unknown) => e instanceof StateError && (e as StateError).code === "ECLOSED");
  }
});

// ---------------------------------------------------------------------------
// Full disk and I/O errors (faulty adapter)

test("faulty fs: ENOSPC during commit fails the commit, keeps the store usable and consistent", () => {
  const fs = new FaultyFs({ seed: 7 });
  fs.mkdirp("/r");
  const s = Store.open("/r/store", { fs, create: true });
  s.put(key(1), val("committed"));
  s.commit();
  s.put(key(2), val("doomed"));
  fs.addFault({ action: "ENOSPC", ops: ["write"], path: "/r/store/data/**", nth: 1, prefix: 10 });
  assert.throws(() => s.commit(), (e: unknown) => e instanceof StorageError && e.osCode === "ENOSPC" && /rolled back/.test((e as Error).message));
  assert.is(s.has(key(2)), false);
  assert.is(text(s.get(key(1))), "committed");
  s.put(key(3), val("later"));
  s.commit();
  s.close();
  const again = Store.open("/r/store", { fs });
  assert.is(text(again.get(key(1))), "committed");
  assert.is(text(again.get(key(3))), "later");
  assert.is(again.has(key(2)), false);
  again.close();
});

test("faulty fs: EIO on fdatasync puts the store in the failed state; reopen recovers the last commit", () => {
  const fs = new FaultyFs({ seed: 8 });
  fs.mkdirp("/r");
  const s = Store.open("/r/store", { fs, create: true });
  s.put(key(1), val("one"));
  s.commit();
  s.put(key(2), val("two"));
  fs.addFault({ action: "EIO", ops: ["datasync"], nth: 1 });
  assert.throws(() => s.commit(), (e: unknown) => e instanceof StorageError && e.osCode === "EIO");
  assert.throws(() => s.put(key(3), val("x")), (e: unknown) => e instanceof StateError && (e as StateError).code === "EFAILED");
  assert.is(text(s.get(key(1))), "one", "reads still work");
  s.close();
  const again = Store.open("/r/store", { fs });
  assert.is(text(again.get(key(1))), "one");
  again.close();
});

// ---------------------------------------------------------------------------
// The format, read back by an independent reader written from DESIGN.md alone

each("segments read back by a minimal reader written from the format description", (c) => {
  const root = `${c.root}/store`;
  const s = openStore(c, { create: true });
  s.put(key(1), val("alpha"));
  s.put(key(2), val("beta"));
  s.commit();
  s.put(key(1), val("gamma"));
  s.delete(key(2));
  s.commit();
  s.close();
  const bytes = readAll(c.fs, segmentPaths(c.fs, root)[0]);
  assert.equal([...bytes.subarray(0, 8)], [...enc.encode("DSEGMENT")]);
  // zlib CRC-32, bitwise, straight from the polynomial
  const crc = (b: Uint8Array) => {
    let x = 0xffffffff;
    for (const byte of b) {
      x ^= byte;
      for (let k = 0; k < 8; k++) x = x & 1 ? (x >>> 1) ^ 0xedb88320 : x >>> 1;
    }
    return (x ^ 0xffffffff) >>> 0;
  };
  const dv = new DataView(bytes.buffer);
  const seen: string[] = [];
  for (let off = 8; off < bytes.length;) {
    const size = dv.getUint32(off + 4, true);
    const tag = bytes[off + 8];
    assert.is(dv.getUint32(off, true), crc(bytes.subarray(off + 4, off + size)), `crc at ${off}`);
    if (tag === 0) seen.push(`PUT ${dec.decode(bytes.subarray(off + 9, off + 41)).trim()}=${dec.decode(bytes.subarray(off + 41, off + size))}`);
    else if (tag === 1) seen.push(`DEL ${dec.decode(bytes.subarray(off + 9, off + 41)).trim()} killed ${dv.getUint32(off + 41, true)}`);
    else if (tag === 2) seen.push(`COMMIT ${dv.getBigUint64(off + 9, true)}`);
    else assert.unreachable(`tag ${tag}`);
    off += size;
  }
  assert.equal(seen, ["PUT 1=alpha", "PUT 2=beta", "COMMIT 1", "DEL 1 killed 0", "PUT 1=gamma", "DEL 2 killed 0", "COMMIT 2"]);
});

test.run();
