/**
 * The read cache (src/blockcache.ts) and the value slab (src/valueslab.ts):
 * what get() returns through them is always what the log holds now.
 *
 * The cache keeps committed segment bytes; the danger is a block that
 * outlives the bytes it copied (a rollback truncating and rewriting the
 * head, compaction deleting a segment, repair rewriting the log). The unit
 * tests pin the cache's own rules; the model test drives a store with tiny
 * segments and a tiny cache through puts, deletes, rollbacks across rolls,
 * compactions and reopens, and compares every get with a model.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { adapterCases, type AdapterCase } from "./_support/adapters.ts";
import { BlockCache, READ_CACHE_BLOCK } from "../src/blockcache.ts";
import { SLAB_BYTES, SLAB_VALUE_MAX, ValueSlab } from "../src/valueslab.ts";
import { Store } from "../src/store.ts";
import { FaultyFs } from "../adapters/faulty.ts";
import type { File } from "../src/fs.ts";

/** A FaultyFs file of `blocks` blocks where byte i is (i * 7 + salt) & 0xff. */
function patterned(fs: FaultyFs, path: string, length: number, salt = 0): { file: File; bytes: Uint8Array } {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 7 + salt) & 0xff;
  const f = fs.open(path, "w+");
  f.write(bytes, 0);
  f.sync();
  return { file: f, bytes };
}

test("BlockCache: serves reads inside one block below the limit, and refuses the rest", () => {
  const fs = new FaultyFs({ seed: 3 });
  fs.mkdirp("/c");
  const { file, bytes } = patterned(fs, "/c/seg", 5 * READ_CACHE_BLOCK + 100);
  const cache = new BlockCache(8 * READ_CACHE_BLOCK);
  const dest = new Uint8Array(READ_CACHE_BLOCK);
  assert.ok(cache.read(file, 0, 10, 141, bytes.length, dest, 0));
  assert.equal(dest.subarray(0, 141), bytes.subarray(10, 151));
  assert.is(cache.misses, 1);
  assert.ok(cache.read(file, 0, 500, 141, bytes.length, dest, 3));
  assert.equal(dest.subarray(3, 144), bytes.subarray(500, 641));
  assert.is(cache.hits, 1, "second read in the block is a hit");
  assert.not.ok(cache.read(file, 0, READ_CACHE_BLOCK - 10, 20, bytes.length, dest, 0), "across a block boundary");
  assert.not.ok(cache.read(file, 0, 100, 50, 120, dest, 0), "past the committed limit");
  assert.not.ok(new BlockCache(0).read(file, 0, 10, 10, bytes.length, dest, 0), "a cache of 0 bytes serves nothing");
  file.close();
});

test("BlockCache: a block read when the segment was shorter is read again once the limit passes it", () => {
  const fs = new FaultyFs({ seed: 3 });
  fs.mkdirp("/c");
  const { file, bytes } = patterned(fs, "/c/seg", READ_CACHE_BLOCK);
  const cache = new BlockCache(4 * READ_CACHE_BLOCK);
  const dest = new Uint8Array(64);
  assert.ok(cache.read(file, 0, 0, 64, 1000, dest, 0), "limit 1000: the block holds 1000 bytes");
  assert.ok(cache.read(file, 0, 2000, 64, READ_CACHE_BLOCK, dest, 0), "limit grew: the block is read again");
  assert.equal(dest, bytes.subarray(2000, 2064));
  assert.is(cache.misses, 2);
  file.close();
});

test("BlockCache: a full cache reuses blocks (CLOCK) and every read still returns the file's bytes", () => {
  const fs = new FaultyFs({ seed: 3 });
  fs.mkdirp("/c");
  const blocks = 40;
  const { file, bytes } = patterned(fs, "/c/seg", blocks * READ_CACHE_BLOCK);
  const cache = new BlockCache(4 * READ_CACHE_BLOCK);
  const dest = new Uint8Array(200);
  let x = 12345;
  for (let i = 0; i < 2000; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    // Mostly a hot set of 3 blocks, sometimes anything: the hot blocks keep their reference bits.
    const block = x % 4 === 0 ? x % blocks : x % 3;
    const offset = block * READ_CACHE_BLOCK + (x % (READ_CACHE_BLOCK - 200));
    assert.ok(cache.read(file, 7, offset, 200, bytes.length, dest, 0));
    assert.equal(dest, bytes.subarray(offset, offset + 200), `read ${i} at ${offset}`);
  }
  assert.ok(cache.bytes <= 4 * READ_CACHE_BLOCK, `${cache.bytes} bytes held, capacity 4 blocks`);
  assert.ok(cache.hits > cache.misses, `hot blocks stay cached: ${cache.hits} hits, ${cache.misses} misses`);
  file.close();
});

test("BlockCache: dropSegment and clear forget blocks, so rewritten bytes are read anew", () => {
  const fs = new FaultyFs({ seed: 3 });
  fs.mkdirp("/c");
  const a = patterned(fs, "/c/a", 2 * READ_CACHE_BLOCK, 1);
  const b = patterned(fs, "/c/b", 2 * READ_CACHE_BLOCK, 2);
  const cache = new BlockCache(8 * READ_CACHE_BLOCK);
  const dest = new Uint8Array(32);
  cache.read(a.file, 1, 100, 32, a.bytes.length, dest, 0);
  cache.read(b.file, 2, 100, 32, b.bytes.length, dest, 0);
  const rewritten = new Uint8Array(32).fill(0xee);
  a.file.write(rewritten, 100);
  b.file.write(rewritten, 100);
  cache.dropSegment(1);
  assert.ok(cache.read(a.file, 1, 100, 32, a.bytes.length, dest, 0));
  assert.equal(dest, rewritten, "segment 1 was dropped: read anew");
  assert.ok(cache.read(b.file, 2, 100, 32, b.bytes.length, dest, 0));
  assert.equal(dest, b.bytes.subarray(100, 132), "segment 2 was kept (its owner did not drop it)");
  cache.clear();
  assert.ok(cache.read(b.file, 2, 100, 32, b.bytes.length, dest, 0));
  assert.equal(dest, rewritten, "after clear every block is read anew");
  a.file.close();
  b.file.close();
});

test("BlockCache: a failed block read leaves nothing cached and the error reaches the caller", () => {
  const fs = new FaultyFs({ seed: 3 });
  fs.mkdirp("/c");
  const { file, bytes } = patterned(fs, "/c/seg", READ_CACHE_BLOCK);
  const cache = new BlockCache(4 * READ_CACHE_BLOCK);
  const dest = new Uint8Array(16);
  fs.addFault({ action: "EIO", ops: ["read"], nth: 1 });
  assert.throws(() => cache.read(file, 0, 0, 16, bytes.length, dest, 0), (e: Error & { code?: string }) => e.code === "EIO");
  assert.ok(cache.read(file, 0, 0, 16, bytes.length, dest, 0), "the next read fills the block");
  assert.equal(dest, bytes.subarray(0, 16));
  file.close();
});

test("ValueSlab: small values share slabs without overlapping; large ones get their own buffer", () => {
  const slab = new ValueSlab();
  const src = new Uint8Array(4 * SLAB_VALUE_MAX);
  for (let i = 0; i < src.length; i++) src[i] = i & 0xff;
  const values: { v: Uint8Array; start: number; end: number }[] = [];
  let x = 99;
  for (let i = 0; i < 500; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    const start = x % SLAB_VALUE_MAX;
    const end = start + (x % (SLAB_VALUE_MAX + 1));
    values.push({ v: slab.copy(src, start, end), start, end });
  }
  src.fill(0); // the copies are copies
  for (const { v, start, end } of values) {
    assert.is(v.length, end - start);
    for (let i = 0; i < v.length; i++) if (v[i] !== ((start + i) & 0xff)) assert.unreachable(`value [${start}, ${end}) byte ${i}`);
    assert.ok(v.buffer.byteLength <= SLAB_BYTES);
    assert.is(v.byteOffset % 8, 0, "views start 8-byte aligned");
  }
  const big = slab.copy(new Uint8Array(SLAB_VALUE_MAX + 1), 0, SLAB_VALUE_MAX + 1);
  assert.is(big.buffer.byteLength, SLAB_VALUE_MAX + 1, "a large value owns its buffer");
});

/** Model test: every get equals the model through rolls, rollbacks, compaction and reopen, whatever the cache size. */
for (const readCacheBytes of [0, 2 * READ_CACHE_BLOCK, 64 * READ_CACHE_BLOCK]) {
  for (const kind of ["runtime", "faulty"] as const) {
    test(`store with a ${readCacheBytes} B read cache (${kind} fs): every get returns what the model holds`, () => {
      const cases = adapterCases({ prefix: "segstore-readcache-" });
      const c: AdapterCase = kind === "runtime" ? cases[0] : cases[1];
      (kind === "runtime" ? cases[1] : cases[0]).cleanup();
      const enc = new TextEncoder();
      const key = (n: number) => enc.encode(`k${n}`.padEnd(32, "."));
      const valueOf = (n: number, round: number, len: number) => {
        const v = new Uint8Array(len);
        for (let i = 0; i < len; i++) v[i] = (n * 31 + round * 7 + i) & 0xff;
        return v;
      };
      try {
        const path = `${c.root}/store`;
        const options = { fs: c.fs, readCacheBytes, maxSegmentSize: 2048, autoCompact: true, compactRatio: 0.6 };
        let store = Store.open(path, { ...options, create: true });
        const committed = new Map<number, Uint8Array>();
        let pending = new Map<number, Uint8Array | null>();
        const expected = (k: number) => (pending.has(k) ? pending.get(k) ?? undefined : committed.get(k));
        let x = 4242;
        const rnd = (m: number) => ((x = (x * 1103515245 + 12345) & 0x7fffffff) % m);
        for (let round = 0; round < 400; round++) {
          const op = rnd(100);
          const k = rnd(40);
          if (op < 45) {
            const v = valueOf(k, round, 1 + rnd(300));
            store.put(key(k), v);
            pending.set(k, v);
          } else if (op < 55) {
            if (store.delete(key(k))) pending.set(k, null);
            else assert.is(expected(k), undefined, `delete of ${k} found nothing`);
          } else if (op < 70) {
            store.commit();
            for (const [pk, pv] of pending) pv === null ? committed.delete(pk) : committed.set(pk, pv);
            pending = new Map();
          } else if (op < 80) {
            store.rollback();
            pending = new Map();
          } else if (op < 83) {
            store.rollback();
            pending = new Map();
            store.compact();
          } else if (op < 85) {
            store.close();
            pending = new Map();
            store = Store.open(path, options);
          }
          // Read a few keys after every step, cached or not.
          for (let r = 0; r < 3; r++) {
            const g = rnd(40);
            const got = store.get(key(g));
            const want = expected(g);
            if (want === undefined) assert.is(got, undefined, `round ${round}: key ${g} should be absent`);
            else assert.equal(got, want, `round ${round}: key ${g}`);
          }
        }
        store.close();
      } finally {
        c.cleanup();
      }
    });
  }
}

test.run();
