/**
 * Blobs over the wire, in one process with real sockets: uploads streamed
 * and staged (rollback, conflicts and failed sources leave no file on the
 * server), downloads into the shared cache (fetched once, then served from
 * the cache; a new serial is a new file), the cache's size limit and LRU
 * eviction that never touches a blob held open, and the shared-directory
 * mode (cacheDir = the server's blob directory: moved by rename, read in
 * place, nothing over the socket).
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runtimeFs } from "../adapters/runtime.ts";
import { contentId } from "../src/contentid.ts";
import { ConflictError, StateError } from "../src/format.ts";
import { BlobCache, CACHE_BLOB_NAME } from "../src/net/cache.ts";
import {
  bytesEqual, key, pseudoRandomBytes, readAllStream, rejects, startServer, streamOf, val, type ServedStore,
} from "./_support/net-harness.ts";

const MiB = 1024 * 1024;

/** Every file under `dir`, relative, recursively. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) for (const f of filesUnder(p)) out.push(`${name}/${f}`);
    else out.push(name);
  }
  return out;
}

function tempFilesOnServer(h: ServedStore): string[] {
  return filesUnder(join(h.storePath, "blobs")).filter((f) => f.endsWith(".tmp"));
}

async function withServer(fn: (h: ServedStore) => Promise<void>, transport: "tcp" | "unix" = "tcp"): Promise<void> {
  const h = await startServer({ transport });
  try {
    await fn(h);
  } finally {
    await h.close();
  }
}

test("putBlob streams to the server; another client reads it through its cache, once", () => withServer(async (h) => {
  const a = await h.connect();
  const b = await h.connect({ cacheDir: join(h.dir.path, "cache") });
  const bytes = pseudoRandomBytes(5 * MiB + 123, 7);
  const info = await a.putBlob(key(1), streamOf(bytes, 100_000));
  assert.is(info.length, bytes.length);
  assert.equal(info.hash, await contentId(bytes));
  assert.is(tempFilesOnServer(h).length, 1, "staged on the server until commit");
  await a.commit();
  assert.equal(tempFilesOnServer(h), []);
  assert.ok(bytesEqual(await readAllStream((await b.openBlob(key(1)))!), bytes));
  assert.is(h.server.stats().blobDownloads, 1);
  // Again: from the cache, nothing sent.
  assert.ok(bytesEqual(await readAllStream((await b.openBlob(key(1)))!), bytes));
  const path = await b.blobPath(key(1));
  assert.ok(path !== undefined && bytesEqual(new Uint8Array(readFileSync(path)), bytes));
  assert.is(h.server.stats().blobDownloads, 1);
  assert.is(h.server.stats().blobBytesSent, bytes.length);
  // A plain value's id and a missing id hold no blob; a blob's id has no plain value.
  await a.put(key(2), val("plain"));
  await a.commit();
  assert.is(await b.openBlob(key(2)), undefined);
  assert.is(await b.openBlob(key(3)), undefined);
  assert.is(await b.get(key(1)), undefined);
  assert.is(await b.has(key(1)), true);
}));

test("putBlob sends big source chunks as they are and gathers small ones, in order; a source that refills one buffer is safe", () => withServer(async (h) => {
  const a = await h.connect();
  const b = await h.connect({ cacheDir: join(h.dir.path, "cache") });
  const bytes = pseudoRandomBytes(9 * MiB + 777, 11);
  // Chunks of a frame's size and more (sent without a copy), between small ones (gathered), unaligned.
  const sizes = [1000, 2 * MiB + 5, 3 * MiB, 70_000, MiB, MiB - 1, 1];
  async function* mixed(): AsyncGenerator<Uint8Array> {
    let at = 0;
    for (let k = 0; at < bytes.length; k++) {
      const n = Math.min(sizes[k % sizes.length]!, bytes.length - at);
      yield bytes.subarray(at, at + n);
      at += n;
    }
  }
  // One buffer refilled for every chunk: putBlob must be done with a chunk before it asks for the next.
  async function* refilling(): AsyncGenerator<Uint8Array> {
    const buf = new Uint8Array(2 * MiB);
    for (let at = 0; at < bytes.length; at += buf.length) {
      const n = Math.min(buf.length, bytes.length - at);
      buf.set(bytes.subarray(at, at + n));
      yield buf.subarray(0, n);
      buf.fill(0xee); // what a reader of a later chunk would see if the last were still queued
    }
  }
  await a.putBlob(key(1), mixed());
  await a.putBlob(key(2), refilling());
  await a.commit();
  for (const k of [1, 2]) assert.ok(bytesEqual(await readAllStream((await b.openBlob(key(k)))!), bytes), `blob ${k}`);
}));

test("an overwritten blob is a new cache file (new serial); the old one is not served", () => withServer(async (h) => {
  const a = await h.connect();
  const b = await h.connect({ cacheDir: join(h.dir.path, "cache") });
  await a.putBlob(key(1), streamOf(new Uint8Array(300_000).fill(1)));
  await a.commit();
  assert.is((await readAllStream((await b.openBlob(key(1)))!))[0], 1);
  await a.putBlob(key(1), streamOf(new Uint8Array(200_000).fill(2)));
  await a.commit();
  await b.sync();
  const again = await readAllStream((await b.openBlob(key(1)))!);
  assert.is(again.length, 200_000);
  assert.is(again[0], 2);
  assert.is(filesUnder(join(h.dir.path, "cache")).filter((f) => CACHE_BLOB_NAME.test(f)).length, 2);
}));

test("{ path } copies a file; { path, move: true } removes it once the commit succeeds", () => withServer(async (h) => {
  const a = await h.connect();
  const b = await h.connect({ cacheDir: join(h.dir.path, "cache") });
  const src = join(h.dir.path, "source.bin");
  const bytes = pseudoRandomBytes(2 * MiB + 5, 3);
  writeFileSync(src, bytes);
  await a.putBlob(key(1), { path: src });
  await a.putBlob(key(2), { path: src, move: true });
  assert.ok(existsSync(src), "kept until the commit");
  await a.commit();
  assert.not.ok(existsSync(src), "moved: gone after the commit");
  assert.ok(bytesEqual(await readAllStream((await b.openBlob(key(1)))!), bytes));
  assert.ok(bytesEqual(await readAllStream((await b.openBlob(key(2)))!), bytes));
}));

test("rollback, a failing source, and a lost vote each leave no file on the server", () => withServer(async (h) => {
  const a = await h.connect();
  const b = await h.connect();
  await a.putBlob(key(1), streamOf(new Uint8Array(3 * MiB).fill(1)));
  await a.rollback();
  assert.equal(tempFilesOnServer(h), [], "rollback");
  assert.is(h.store.has(key(1)), false);

  let pulls = 0;
  const failing = new ReadableStream<Uint8Array>({
    pull(c) {
      if (++pulls === 4) throw new Error("source broke");
      c.enqueue(new Uint8Array(MiB).fill(pulls));
    },
  });
  await rejects(() => a.putBlob(key(2), failing), (e) => (e as Error).message === "source broke", "putBlob of a failing source");
  await a.sync();
  assert.equal(tempFilesOnServer(h), [], "failing source");

  // Both read key 3 (absent), both put a blob there: the second to commit loses, and its staged file goes.
  assert.is(await a.has(key(3)), false);
  assert.is(await b.has(key(3)), false);
  await a.putBlob(key(3), streamOf(new Uint8Array(MiB).fill(5)));
  await b.putBlob(key(3), streamOf(new Uint8Array(MiB).fill(6)));
  assert.is(tempFilesOnServer(h).length, 2);
  await a.commit();
  await rejects(() => b.commit(), (e) => e instanceof ConflictError, "the second commit");
  assert.equal(tempFilesOnServer(h), [], "lost vote");
  const stored = h.store.openBlob(key(3))!;
  assert.is((await readAllStream(stored))[0], 5);
}));

test("a client without cacheDir cannot read blobs; a blob put in the open transaction is not readable yet", () => withServer(async (h) => {
  const a = await h.connect();
  await a.putBlob(key(1), streamOf(new Uint8Array(1000).fill(1)));
  await rejects(() => a.openBlob(key(1)), (e) => e instanceof StateError && e.code === "EBUSY", "openBlob of an uncommitted blob");
  await a.commit();
  await rejects(() => a.openBlob(key(1)), (e) => e instanceof TypeError && /cacheDir/.test((e as Error).message), "openBlob without cacheDir");
}));

test("the cache: LRU eviction past the size limit, never a blob held open", () => withServer(async (h) => {
  const a = await h.connect();
  // Blob 0 is 2 MiB + 1 (two read chunks), the others 1 MiB.
  for (let i = 0; i < 8; i++) await a.putBlob(key(i), streamOf(new Uint8Array(i === 0 ? 2 * MiB + 1 : MiB).fill(i + 1)));
  await a.commit();
  const cacheDir = join(h.dir.path, "cache");
  const b = await h.connect({ cacheDir, cacheSize: 3 * MiB });
  // Hold blob 0 open (not read to the end), then read 1..7 in order.
  const held = await b.openBlob(key(0));
  const heldReader = held!.getReader();
  const first = (await heldReader.read()).value!;
  assert.is(first[0], 1);
  for (let i = 1; i < 8; i++) assert.is((await readAllStream((await b.openBlob(key(i)))!))[0], i + 1);
  const cached = () => filesUnder(cacheDir).filter((f) => CACHE_BLOB_NAME.test(f));
  const sizeNow = () => cached().reduce((n, f) => n + statSync(join(cacheDir, f)).size, 0);
  assert.ok(sizeNow() <= 3.3 * MiB + MiB, `cache holds ${sizeNow()} bytes, target 3 MiB`);
  // Blob 0 is held open: still there. The most recently used (7) is there too; the oldest unheld (1) went.
  const names = cached().map((f) => f.split("-")[1]!.slice(0, 2));
  const hexOf = (i: number) => Array.from(key(i).subarray(0, 1), (x) => x.toString(16).padStart(2, "0")).join("");
  assert.ok(names.includes(hexOf(0)), "the held blob stays");
  assert.ok(names.includes(hexOf(7)), "the newest stays");
  assert.not.ok(names.includes(hexOf(1)), "the least recently used unheld blob went");
  // Reading the held blob to its end still works (its file was never removed).
  let rest = 0;
  for (;;) {
    const { done, value } = await heldReader.read();
    if (done) break;
    rest += value.length;
  }
  assert.is(first.length + rest, 2 * MiB + 1);
  // Once released, a size check may evict it.
  const cache = b.blobCache!;
  const result = cache.checkSize();
  assert.ok(result.bytesAfter <= 3.3 * MiB, `after a check: ${result.bytesAfter}`);
}));

test("BlobCache: one downloader at a time per blob in one process; a failed download leaves nothing", async () => {
  const { tempDir } = await import("./_support/tempdir.ts");
  const dir = tempDir("segstore-cache-");
  try {
    const cache = BlobCache.open(runtimeFs, join(dir.path, "c"), 10 * MiB);
    const name = `${"0".repeat(16)}-${"ab".repeat(32)}.5`;
    let downloads = 0;
    const download = async (file: import("../src/fs.ts").File) => {
      downloads++;
      await new Promise((r) => setTimeout(r, 30));
      file.write(new Uint8Array(1000).fill(9), 0);
    };
    const entries = await Promise.all([1, 2, 3, 4].map(() => cache.acquire(name, 1000, download)));
    assert.is(downloads, 1, "four concurrent acquires, one download");
    assert.is(entries.filter((e) => e.downloaded).length, 1);
    for (const e of entries) {
      const buf = new Uint8Array(1000);
      assert.is(e.file.read(buf, 0), 1000);
      assert.is(buf[999], 9);
      e.release();
    }
    const bad = `${"0".repeat(16)}-${"cd".repeat(32)}.1`;
    await rejects(() => cache.acquire(bad, 10, async (f) => f.write(new Uint8Array(3), 0)), (e) => (e as Error).constructor.name === "IntegrityError", "a short download");
    assert.equal(readdirSync(join(dir.path, "c")).filter((f) => f.startsWith(`${"0".repeat(16)}-cd`) && !f.endsWith(".lock")), []);
    await rejects(() => cache.acquire("../escape", 1, download), (e) => e instanceof TypeError, "a name with a path");
  } finally {
    dir.cleanup();
  }
});

test("shared-directory mode: cacheDir is the server's blob directory; blobs move by rename and are read in place", () => withServer(async (h) => {
  const a = await h.connect({ cacheDir: join(h.storePath, "blobs") });
  assert.ok(a.sharedBlobDir, "the client recognised the server's blob directory");
  const src = join(h.dir.path, "big.bin");
  const bytes = pseudoRandomBytes(3 * MiB, 11);
  writeFileSync(src, bytes);
  await a.putBlob(key(1), { path: src, move: true });
  assert.not.ok(existsSync(src), "renamed away at once (same filesystem)");
  await a.putBlob(key(2), streamOf(bytes));
  await a.commit();
  const s = h.server.stats();
  assert.is(s.blobBytesReceived, 0, "no blob byte crossed the socket");
  assert.is(s.blobUploads, 2);
  const b = await h.connect({ cacheDir: join(h.storePath, "blobs") });
  assert.ok(bytesEqual(await readAllStream((await b.openBlob(key(1)))!), bytes));
  assert.ok(bytesEqual(await readAllStream((await b.openBlob(key(2)))!), bytes));
  assert.is(h.server.stats().blobDownloads, 0, "read in place");
  const path = await b.blobPath(key(1));
  assert.ok(path!.startsWith(join(h.storePath, "blobs")));
  assert.equal(filesUnder(join(h.storePath, "blobs")).filter((f) => f.startsWith("upload-")), []);
  assert.ok(bytesEqual(await readAllStream(h.store.openBlob(key(1))!), bytes), "the store itself verifies it");
}, "unix"));

test.run();
