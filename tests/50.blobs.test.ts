/**
 * Blob suite (src/blobs.ts, src/contentid.ts): round trips from 0 B to
 * 256 MiB with hashes checked, put-by-move, rollback, a power loss at every
 * mutation of a blob commit (then reopen: old or new blob, never partial, no
 * orphan), the orphan sweep, damage detected on read, overwrite and delete
 * freeing disk, and bad input (a failing source, a missing path, EXDEV,
 * wrong id length, ENOSPC) — each on the runtime's filesystem and on the
 * faulty in-memory one, unless it says otherwise.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import process from "node:process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createBLAKE3 } from "hash-wasm";
import { adapterCases, type AdapterCase } from "./_support/adapters.ts";
import { Store, type OpenOptions } from "../src/store.ts";
import { contentId } from "../src/contentid.ts";
import { BLOB_READ_CHUNK_SIZE, BLOB_SYNC_BEHIND_BYTES, sweepBlobFiles } from "../src/blobs.ts";
import { IntegrityError, NotFoundError, StateError, StorageError } from "../src/format.ts";
import { FsError, type File, type FileSystem } from "../src/fs.ts";
import { FaultyFs, type CrashOptions } from "../adapters/faulty.ts";
import { contentId as contentIdFromMod } from "../mod.ts";

const enc = new TextEncoder();
const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------
// Helpers

/** A deterministic 32-byte id for n. */
function key(n: number): Uint8Array {
  return enc.encode(String(n).padEnd(32, " "));
}

/** xorshift32 bytes: `length` deterministic bytes for `seed`. */
function bytesOf(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  fillRandom(out, seed >>> 0 || 1);
  return out;
}
/** Fills `buf` from the xorshift32 state `state`; returns the next state. */
function fillRandom(buf: Uint8Array, state: number): number {
  let x = state >>> 0 || 1;
  for (let i = 0; i < buf.length; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    buf[i] = x & 0xff;
  }
  return x;
}

/** A ReadableStream over `bytes` in chunks of `chunk` bytes (views, not copies). */
function streamOf(bytes: Uint8Array, chunk = 64 * 1024): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (at >= bytes.length) {
        controller.close();
        return;
      }
      controller.enqueue(bytes.subarray(at, at + chunk));
      at += chunk;
    },
  });
}

/** An async generator over `bytes` in chunks of varying sizes (1 B up to ~70 KiB). */
async function* unevenChunks(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  let at = 0;
  let k = 1;
  while (at < bytes.length) {
    const n = Math.min(bytes.length - at, (k * 7919) % 70_001 + 1);
    yield bytes.slice(at, at + n);
    at += n;
    k++;
  }
}

/** Reads a whole blob stream into one array. */
async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  for await (const c of stream) {
    parts.push(c);
    total += c.length;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function openStore(c: AdapterCase, options: OpenOptions = {}, fs: FileSystem = c.fs): Store {
  return Store.open(`${c.root}/store`, { fs, ...options });
}

/** Every file under the store's blobs/ directory, as paths relative to it, sorted. */
function blobFileNames(fs: FileSystem, root: string): string[] {
  const blobs = `${root}/store/blobs`;
  if (fs.stat(blobs) === undefined) return [];
  const out: string[] = [];
  for (const d of fs.readdir(blobs)) {
    const st = fs.stat(`${blobs}/${d}`);
    if (st?.isDirectory) for (const f of fs.readdir(`${blobs}/${d}`)) out.push(`${d}/${f}`);
    else out.push(d);
  }
  return out.sort();
}

/** The blobs/-relative name of a path from blobPath. */
function relBlob(path: string): string {
  return path.slice(path.indexOf("/blobs/") + "/blobs/".length);
}

/** Writes a file through the adapter (durably). */
function writeFileFs(fs: FileSystem, path: string, bytes: Uint8Array): void {
  const f = fs.open(path, "w+");
  try {
    f.write(bytes, 0);
    f.sync();
  } finally {
    f.close();
  }
}
function readFileFs(fs: FileSystem, path: string): Uint8Array {
  const f = fs.open(path, "r");
  try {
    const buf = new Uint8Array(f.size());
    f.read(buf, 0);
    return buf;
  } finally {
    f.close();
  }
}

/**
 * `inner` with some calls replaced: `rename(from, to)`, `write(file, buf,
 * position)` (also called for writeAsync) and `datasyncAsync(file)` hooks
 * that may throw before delegating. For EXDEV, ENOSPC and EIO on any
 * adapter. `writeAsyncDelayMs` makes each writeAsync wait that long before
 * it reads its buffer, as a slow disk would.
 */
function wrapFs(
  inner: FileSystem,
  hooks: {
    rename?(from: string, to: string): void;
    write?(path: string, buf: Uint8Array, position: number): void;
    datasyncAsync?(path: string): void;
    writeAsyncDelayMs?: number;
  },
): FileSystem {
  const wrapFile = (f: File): File => ({
    get path() { return f.path; },
    read: (buf, position) => f.read(buf, position),
    write: (buf, position) => {
      hooks.write?.(f.path, buf, position);
      f.write(buf, position);
    },
    writeAsync: async (buf, position) => {
      hooks.write?.(f.path, buf, position);
      if (hooks.writeAsyncDelayMs !== undefined) await new Promise((resolve) => setTimeout(resolve, hooks.writeAsyncDelayMs));
      await f.writeAsync(buf, position);
    },
    size: () => f.size(),
    truncate: (n) => f.truncate(n),
    datasync: () => f.datasync(),
    datasyncAsync: async () => {
      hooks.datasyncAsync?.(f.path);
      await f.datasyncAsync();
    },
    sync: () => f.sync(),
    close: () => f.close(),
    lock: (mode, wait) => f.lock(mode, wait),
    unlock: () => f.unlock(),
  });
  return {
    name: inner.name,
    open: (path, mode) => wrapFile(inner.open(path, mode)),
    mkdir: (p) => inner.mkdir(p),
    readdir: (p) => inner.readdir(p),
    rename: (from, to) => {
      hooks.rename?.(from, to);
      inner.rename(from, to);
    },
    unlink: (p) => inner.unlink(p),
    rmdir: (p) => inner.rmdir(p),
    stat: (p) => inner.stat(p),
    syncDir: (p) => inner.syncDir(p),
    resolve: (p) => inner.resolve(p),
  };
}

/** Runs `fn` on the runtime adapter and on the faulty one, each in a fresh root. */
function each(name: string, fn: (c: AdapterCase) => Promise<void>): void {
  for (const kind of ["runtime", "faulty"] as const) {
    test(`${kind === "runtime" ? "runtime fs" : "faulty fs"}: ${name}`, async () => {
      const cases = adapterCases({ prefix: "segstore-blobs-" });
      const c = kind === "runtime" ? cases[0] : cases[1];
      const other = kind === "runtime" ? cases[1] : cases[0];
      other.cleanup();
      try {
        await fn(c);
      } finally {
        c.cleanup();
      }
    });
  }
}

async function rejects(p: Promise<unknown>, check: (e: unknown) => boolean, what: string): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    assert.ok(check(e), `${what}: unexpected error ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    return e;
  }
  assert.unreachable(`${what}: expected a rejection`);
}

// ---------------------------------------------------------------------------
// contentId

test("contentId() gives BLAKE3-256: known vectors, and the same id for bytes, a stream and an async iterable", async () => {
  assert.is(hex(await contentId(new Uint8Array(0))), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
  assert.is(hex(await contentId(enc.encode("abc"))), "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");
  const data = bytesOf(300_000, 5);
  const id = await contentId(data);
  assert.is(id.length, 32);
  assert.equal(await contentId(streamOf(data, 4096)), id);
  assert.equal(await contentId(unevenChunks(data)), id);
  assert.equal(await contentIdFromMod(data), id, "mod.ts exports the same contentId");
  await rejects(contentId("text" as unknown as Uint8Array), (e) => e instanceof TypeError, "a string");
  await rejects(contentId(streamOf(new Uint8Array(1)).pipeThrough(new TransformStream({ transform(_c, ctl) { ctl.enqueue("x" as unknown as Uint8Array); } }))), (e) => e instanceof TypeError, "a non-bytes chunk");
});

// ---------------------------------------------------------------------------
// Round trips

for (const size of [0, 1, 59_000, MiB]) {
  each(`putBlob() and openBlob() round-trip ${size} B with the hash checked, before and after reopen`, async (c) => {
    const id = key(size);
    const data = bytesOf(size, size + 1);
    const store = openStore(c, { create: true });
    const info = await store.putBlob(id, streamOf(data, 16 * 1024));
    assert.is(info.length, size);
    assert.equal(info.hash, await contentId(data));
    assert.is(info.serial, 1n, "serial is the transaction that commits it");
    assert.ok(store.has(id));
    assert.is(store.get(id), undefined, "get() of a blob id gives undefined");
    assert.equal(await readAll(store.openBlob(id)!), data, "read-your-writes before commit");
    assert.is(store.commit(), 1n);
    assert.is(store.stats().blobs, 1);
    const path = store.blobPath(id)!;
    assert.ok(path.endsWith(`.1`), path);
    assert.is(c.fs.stat(path)?.size, size);
    assert.equal(blobFileNames(c.fs, c.root), [relBlob(path)]);
    const back = await readAll(store.openBlob(id)!);
    assert.ok(equalBytes(back, data));
    assert.equal(await contentId(back), info.hash);
    store.close();
    const again = openStore(c);
    assert.equal(await readAll(again.openBlob(id)!), data, "after reopen");
    assert.is(again.blobPath(id), path);
    assert.is(again.stats().blobs, 1);
    again.close();
  });
}

each("putBlob() from an AsyncIterable of uneven chunks (1 B to 70 KiB) round-trips", async (c) => {
  const data = bytesOf(3 * MiB + 12_345, 9);
  const store = openStore(c, { create: true });
  const info = await store.putBlob(key(1), unevenChunks(data));
  store.commit();
  assert.is(info.length, data.length);
  assert.equal(info.hash, await contentId(data));
  const chunks: number[] = [];
  const back: Uint8Array[] = [];
  for await (const chunk of store.openBlob(key(1))!) {
    chunks.push(chunk.length);
    back.push(chunk);
  }
  assert.ok(chunks.every((n) => n <= BLOB_READ_CHUNK_SIZE), "read in chunks of at most BLOB_READ_CHUNK_SIZE");
  assert.is(chunks.length, Math.ceil(data.length / BLOB_READ_CHUNK_SIZE));
  assert.equal(await contentId(unevenChunks(data)), await contentId((async function* () { yield* back; })()));
  store.close();
});

test("runtime fs: a 256 MiB blob generated as a stream round-trips with BLAKE3 checked, never whole in memory", async () => {
  const [c, faulty] = adapterCases({ prefix: "segstore-blobs-big-" });
  faulty.cleanup();
  const total = 256 * MiB;
  const chunk = MiB;
  try {
    const expected = await createBLAKE3();
    expected.init();
    let state = 12345;
    let made = 0;
    const source = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (made >= total) {
          controller.close();
          return;
        }
        const buf = new Uint8Array(chunk);
        state = fillRandom(buf, state);
        expected.update(buf);
        made += chunk;
        controller.enqueue(buf);
      },
    });
    const store = openStore(c, { create: true });
    const info = await store.putBlob(key(256), source);
    store.commit();
    const want = expected.digest("binary");
    assert.is(info.length, total);
    assert.equal(info.hash, want);
    assert.is(c.fs.stat(store.blobPath(key(256))!)?.size, total);
    const readHash = await createBLAKE3();
    readHash.init();
    let read = 0;
    for await (const part of store.openBlob(key(256))!) {
      readHash.update(part);
      read += part.length;
    }
    assert.is(read, total);
    assert.equal(readHash.digest("binary"), want);
    store.close();
  } finally {
    c.cleanup();
  }
});

// ---------------------------------------------------------------------------
// Paths and moves

each("putBlob({ path, move: true }) renames the file into the store: the source is gone, the content is in the store", async (c) => {
  const data = bytesOf(200_000, 3);
  const src = `${c.root}/upload.bin`;
  writeFileFs(c.fs, src, data);
  const store = openStore(c, { create: true });
  const info = await store.putBlob(key(1), { path: src, move: true });
  assert.is(c.fs.stat(src), undefined, "source moved away");
  assert.equal(info.hash, await contentId(data));
  store.commit();
  assert.equal(readFileFs(c.fs, store.blobPath(key(1))!), data);
  assert.equal(await readAll(store.openBlob(key(1))!), data);
  store.close();
});

each("putBlob({ path }) copies the file and leaves it; a missing path is NotFoundError; moving a store file is refused", async (c) => {
  const data = bytesOf(70_000, 4);
  const src = `${c.root}/keep.bin`;
  writeFileFs(c.fs, src, data);
  const store = openStore(c, { create: true });
  await store.putBlob(key(1), { path: src });
  assert.equal(readFileFs(c.fs, src), data, "source left as it was");
  store.commit();
  assert.equal(await readAll(store.openBlob(key(1))!), data);
  const e = await rejects(store.putBlob(key(2), { path: `${c.root}/nope.bin`, move: true }), (e) => e instanceof NotFoundError, "missing path");
  assert.match((e as Error).message, "nope.bin");
  await rejects(store.putBlob(key(2), { path: `${c.root}/nope.bin` }), (e) => e instanceof NotFoundError, "missing path, copy");
  await rejects(store.putBlob(key(3), { path: store.blobPath(key(1))!, move: true }), (e) => e instanceof TypeError && /file of store/.test((e as Error).message), "moving a committed blob");
  await rejects(store.putBlob(key(3), { path: `${c.root}/store/config`, move: true }), (e) => e instanceof TypeError, "moving the config");
  assert.is(store.stats().inTransaction, false, "nothing was added");
  assert.equal(blobFileNames(c.fs, c.root), [relBlob(store.blobPath(key(1))!)]);
  store.close();
});

each("putBlob({ path, move: true }) across filesystems (EXDEV from rename) falls back to a copy, then removes the source", async (c) => {
  const data = bytesOf(2 * MiB + 17, 6);
  const src = `${c.root}/other-fs/upload.bin`;
  c.fs.mkdir(`${c.root}/other-fs`);
  writeFileFs(c.fs, src, data);
  let exdev = 0;
  const fs = wrapFs(c.fs, {
    rename(from) {
      if (from.startsWith(`${c.root}/other-fs/`)) {
        exdev++;
        throw new FsError("EXDEV", "rename", from, `EXDEV: rename ${from}: cross-device link not permitted`);
      }
    },
  });
  const store = openStore(c, { create: true }, fs);
  const info = await store.putBlob(key(1), { path: src, move: true });
  assert.is(exdev, 1, "the rename was tried and refused");
  assert.is(c.fs.stat(src), undefined, "source removed after the copy");
  assert.equal(info.hash, await contentId(data));
  store.commit();
  assert.equal(await readAll(store.openBlob(key(1))!), data);
  store.close();
});

test("runtime fs: putBlob({ path, move: true }) from /dev/shm (a real EXDEV) copies and removes the source", async () => {
  const [c, faulty] = adapterCases({ prefix: "segstore-blobs-xdev-" });
  faulty.cleanup();
  try {
    if (!existsSync("/dev/shm") || statSync("/dev/shm").dev === statSync(c.root).dev) return; // no second filesystem here
    const dir = mkdtempSync("/dev/shm/segstore-xdev-");
    try {
      const data = bytesOf(1_500_000, 8);
      writeFileSync(`${dir}/up.bin`, data);
      const store = openStore(c, { create: true });
      await store.putBlob(key(1), { path: `${dir}/up.bin`, move: true });
      assert.not.ok(existsSync(`${dir}/up.bin`));
      store.commit();
      assert.equal(new Uint8Array(readFileSync(store.blobPath(key(1))!)), data);
      store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  } finally {
    c.cleanup();
  }
});

// ---------------------------------------------------------------------------
// Transactions

each("rollback() after putBlob() leaves no file, and the old blob stays", async (c) => {
  const store = openStore(c, { create: true });
  const old = bytesOf(10_000, 1);
  await store.putBlob(key(1), streamOf(old));
  store.commit();
  const committed = blobFileNames(c.fs, c.root);
  await store.putBlob(key(1), streamOf(bytesOf(20_000, 2)));
  await store.putBlob(key(2), streamOf(bytesOf(30_000, 3)));
  assert.is(blobFileNames(c.fs, c.root).length, 3, "two temp files and the committed one");
  store.rollback();
  assert.equal(blobFileNames(c.fs, c.root), committed);
  assert.equal(await readAll(store.openBlob(key(1))!), old);
  assert.is(store.openBlob(key(2)), undefined);
  // close() rolls back too
  await store.putBlob(key(3), streamOf(bytesOf(5, 5)));
  store.close();
  assert.equal(blobFileNames(c.fs, c.root), committed);
});

each("two putBlob() of one id in a transaction: the last wins and the first's temp file goes at once", async (c) => {
  const store = openStore(c, { create: true });
  await store.putBlob(key(1), streamOf(bytesOf(1000, 1)));
  const second = bytesOf(2000, 2);
  await store.putBlob(key(1), streamOf(second));
  assert.is(blobFileNames(c.fs, c.root).length, 1);
  store.commit();
  assert.equal(await readAll(store.openBlob(key(1))!), second);
  assert.equal(blobFileNames(c.fs, c.root), [relBlob(store.blobPath(key(1))!)]);
  store.close();
});

each("overwrite (putBlob, put) and delete of a blob free its file once the commit is durable; rollback keeps it", async (c) => {
  const store = openStore(c, { create: true });
  await store.putBlob(key(1), streamOf(bytesOf(MiB, 1)));
  store.commit();
  const first = store.blobPath(key(1))!;
  const v2 = bytesOf(MiB / 2, 2);
  await store.putBlob(key(1), streamOf(v2));
  assert.ok(c.fs.stat(first) !== undefined, "the old file stays until the commit");
  store.commit();
  assert.is(c.fs.stat(first), undefined, "overwrite by putBlob freed the old file");
  assert.equal(await readAll(store.openBlob(key(1))!), v2);
  const second = store.blobPath(key(1))!;
  assert.equal(blobFileNames(c.fs, c.root), [relBlob(second)]);

  store.delete(key(1));
  store.rollback();
  assert.ok(c.fs.stat(second) !== undefined, "rolled-back delete keeps the file");
  store.put(key(1), enc.encode("small now"));
  assert.ok(c.fs.stat(second) !== undefined);
  store.commit();
  assert.is(c.fs.stat(second), undefined, "overwrite by put freed the file");
  assert.is(store.stats().blobs, 0);

  await store.putBlob(key(2), streamOf(bytesOf(300_000, 3)));
  store.commit();
  const third = store.blobPath(key(2))!;
  assert.is(store.delete(key(2)), true);
  assert.is(store.blobPath(key(2)), undefined);
  store.commit();
  assert.is(c.fs.stat(third), undefined, "delete freed the file");
  assert.equal(blobFileNames(c.fs, c.root), []);
  store.close();
});

each("a put or delete of a blob put earlier in the same transaction removes its temp file", async (c) => {
  const store = openStore(c, { create: true });
  await store.putBlob(key(1), streamOf(bytesOf(1000, 1)));
  await store.putBlob(key(2), streamOf(bytesOf(1000, 2)));
  store.put(key(1), enc.encode("value"));
  store.delete(key(2));
  assert.equal(blobFileNames(c.fs, c.root), []);
  store.commit();
  assert.equal(blobFileNames(c.fs, c.root), []);
  assert.is(store.stats().blobs, 0);
  store.close();
});

each("openBlob() is a byte stream: a BYOB reader's one buffer is filled in place, verified at the end; an empty blob ends at once", async (c) => {
  const data = bytesOf(MiB + 4321, 13);
  const store = openStore(c, { create: true });
  await store.putBlob(key(1), streamOf(data));
  await store.putBlob(key(2), streamOf(new Uint8Array(0)));
  store.commit();
  const reader = store.openBlob(key(1))!.getReader({ mode: "byob" });
  let buf = new Uint8Array(100_000);
  const firstBuffer = buf.buffer;
  const out = new Uint8Array(data.length);
  let at = 0;
  let reads = 0;
  for (;;) {
    const { done, value } = await reader.read(buf);
    if (done) break;
    assert.ok(value!.length <= 100_000);
    out.set(value!, at);
    at += value!.length;
    reads++;
    buf = new Uint8Array(value!.buffer); // the same memory, handed back (transferred) by the stream
  }
  assert.is(at, data.length);
  assert.ok(equalBytes(out, data));
  assert.is(reads, Math.ceil(data.length / 100_000));
  assert.is(buf.byteLength, firstBuffer.byteLength, "one buffer went round");
  const empty = store.openBlob(key(2))!.getReader({ mode: "byob" });
  const r = await empty.read(new Uint8Array(16));
  assert.is(r.done, true);
  assert.equal(await readAll(store.openBlob(key(2))!), new Uint8Array(0));
  // A damaged blob errors a BYOB reader too, before its last bytes.
  const path = store.blobPath(key(1))!;
  if (c.fs instanceof FaultyFs) c.fs.flipBit(path, 5);
  else {
    const d = readFileFs(c.fs, path);
    d[5] ^= 1;
    writeFileFs(c.fs, path, d);
  }
  const bad = store.openBlob(key(1))!.getReader({ mode: "byob" });
  let got = 0;
  await rejects((async () => {
    let b = new Uint8Array(MiB);
    for (;;) {
      const { done, value } = await bad.read(b);
      if (done) break;
      got += value!.length;
      b = new Uint8Array(value!.buffer);
    }
  })(), (e) => e instanceof IntegrityError, "damaged, BYOB");
  assert.is(got, MiB, "the first MiB was delivered, the last bytes held back");
  store.close();
});

each("an open blob stream keeps reading after a delete and commit removed the file", async (c) => {
  const data = bytesOf(3 * MiB, 7);
  const store = openStore(c, { create: true });
  await store.putBlob(key(1), streamOf(data));
  store.commit();
  const reader = store.openBlob(key(1))!.getReader();
  const first = await reader.read();
  store.delete(key(1));
  store.commit();
  assert.equal(blobFileNames(c.fs, c.root), []);
  const parts = [first.value!];
  for (;;) {
    const r = await reader.read();
    if (r.done) break;
    parts.push(r.value);
  }
  assert.equal(await contentId((async function* () { yield* parts; })()), await contentId(data));
  store.close();
});

each("a commit while putBlob() is streaming: the commit goes on, putBlob rejects with StateError EBUSY and leaves no file", async (c) => {
  const store = openStore(c, { create: true });
  store.put(key(9), enc.encode("other work"));
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  async function* slow(): AsyncGenerator<Uint8Array> {
    yield bytesOf(1000, 1);
    await gate;
    yield bytesOf(1000, 2);
  }
  const pending = store.putBlob(key(1), slow());
  await new Promise((r) => setTimeout(r, 10));
  assert.is(store.commit(), 1n);
  release();
  await rejects(pending, (e) => e instanceof StateError && e.code === "EBUSY", "putBlob across a commit");
  assert.is(store.has(key(1)), false);
  assert.equal(blobFileNames(c.fs, c.root), []);
  store.close();
});

each("compaction carries BLOB records: the blob survives compact(), reopen and the orphan sweep", async (c) => {
  const store = openStore(c, { create: true, maxSegmentSize: 4096, autoCompact: false });
  const data = bytesOf(100_000, 11);
  await store.putBlob(key(1), streamOf(data));
  for (let i = 10; i < 60; i++) store.put(key(i), bytesOf(100, i));
  store.commit();
  for (let round = 0; round < 3; round++) {
    for (let i = 10; i < 60; i++) store.put(key(i), bytesOf(100, i + round));
    store.commit();
  }
  const result = store.compact();
  assert.ok(result.segmentsCompacted > 0, "something was compacted");
  assert.equal(await readAll(store.openBlob(key(1))!), data);
  store.close();
  const again = openStore(c);
  assert.equal(await readAll(again.openBlob(key(1))!), data);
  assert.equal(blobFileNames(c.fs, c.root), [relBlob(again.blobPath(key(1))!)]);
  again.close();
});

// ---------------------------------------------------------------------------
// The orphan sweep

each("open removes temp files and blob files no committed record names, and leaves other names alone", async (c) => {
  const store = openStore(c, { create: true });
  const data = bytesOf(5000, 1);
  await store.putBlob(key(1), streamOf(data));
  store.commit();
  const path = store.blobPath(key(1))!;
  store.close();
  const dir = path.slice(0, path.lastIndexOf("/"));
  const idh = hex(key(1));
  const otherHex = "ab".repeat(32);
  c.fs.mkdir(`${c.root}/store/blobs/ab`);
  const planted = {
    temp: `${dir}/${idh}.0123abcd.tmp`,
    staleSerial: `${dir}/${idh}.7`,
    noRecord: `${c.root}/store/blobs/ab/${otherHex}.1`,
    noRecordTemp: `${c.root}/store/blobs/ab/${otherHex}.ff.tmp`,
    foreign: `${c.root}/store/blobs/ab/client-download.dl`,
  };
  for (const p of Object.values(planted)) writeFileFs(c.fs, p, bytesOf(100, 2));
  const again = openStore(c);
  const left = blobFileNames(c.fs, c.root);
  assert.equal(left, [relBlob(planted.foreign), relBlob(path)].sort());
  assert.equal(await readAll(again.openBlob(key(1))!), data);
  assert.equal(sweepBlobFiles(again), { temps: 0, orphans: 0 }, "a second sweep finds nothing");
  again.close();
  // read-only opens never sweep
  writeFileFs(c.fs, planted.temp, bytesOf(10, 3));
  const ro = openStore(c, { readOnly: true });
  assert.ok(c.fs.stat(planted.temp) !== undefined);
  assert.equal(await readAll(ro.openBlob(key(1))!), data);
  ro.close();
});

// ---------------------------------------------------------------------------
// Damage

each("a flipped bit in a blob file errors the stream with IntegrityError naming the file; verify: false skips the hash", async (c) => {
  const data = bytesOf(2 * MiB + 5, 12);
  const store = openStore(c, { create: true });
  await store.putBlob(key(1), streamOf(data));
  store.commit();
  const path = store.blobPath(key(1))!;
  const damaged = readFileFs(c.fs, path);
  damaged[MiB + 77] ^= 0x10;
  if (c.fs instanceof FaultyFs) c.fs.flipBit(path, MiB + 77, 4);
  else writeFileFs(c.fs, path, damaged);
  const seen: number[] = [];
  const reader = store.openBlob(key(1))!.getReader();
  const e = await rejects((async () => {
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      seen.push(r.value.length);
    }
  })(), (e) => e instanceof IntegrityError, "damaged blob");
  assert.ok((e as IntegrityError).message.includes(path), "the message names the file");
  assert.is((e as IntegrityError).file, path);
  assert.ok(seen.reduce((a, b) => a + b, 0) < data.length, "the last chunk is held back until verified");
  assert.equal(await readAll(store.openBlob(key(1), { verify: false })!), damaged, "verify: false reads the bytes as they are");
  assert.throws(() => store.openBlob(key(1), { verfy: true } as never), (e: unknown) => e instanceof TypeError && /verfy/.test((e as Error).message));
  store.close();
});

each("a truncated or missing blob file is IntegrityError at openBlob()", async (c) => {
  const store = openStore(c, { create: true });
  await store.putBlob(key(1), streamOf(bytesOf(10_000, 1)));
  store.commit();
  const path = store.blobPath(key(1))!;
  writeFileFs(c.fs, path, bytesOf(9_999, 1));
  assert.throws(() => store.openBlob(key(1)), (e: unknown) => e instanceof IntegrityError && (e as Error).message.includes(path) && /9999/.test((e as Error).message));
  c.fs.unlink(path);
  assert.throws(() => store.openBlob(key(1)), (e: unknown) => e instanceof IntegrityError && /missing/.test((e as Error).message));
  store.close();
});

// ---------------------------------------------------------------------------
// Bad input

each("a source that errors midway: putBlob rejects with its error, no partial blob, temp removed, the transaction goes on", async (c) => {
  const store = openStore(c, { create: true });
  store.put(key(5), enc.encode("kept in the transaction"));
  const boom = new Error("socket reset by peer");
  let sent = 0;
  let cancelled: unknown;
  const failing = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent === 3) {
        controller.error(boom);
        return;
      }
      sent++;
      controller.enqueue(bytesOf(600_000, sent));
    },
    cancel(reason) {
      cancelled = reason;
    },
  });
  const e = await rejects(store.putBlob(key(1), failing), (e) => e === boom, "failing stream");
  assert.is(e, boom);
  assert.equal(blobFileNames(c.fs, c.root), [], "temp file removed");
  assert.is(store.has(key(1)), false);
  // A chunk of the wrong type: TypeError, and the source is cancelled.
  const wrongType = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue("not bytes" as unknown as Uint8Array);
    },
    cancel(reason) {
      cancelled = reason;
    },
  });
  await rejects(store.putBlob(key(1), wrongType), (e) => e instanceof TypeError && /Uint8Array/.test((e as Error).message), "string chunk");
  assert.ok(cancelled instanceof TypeError, "the source was cancelled with the error");
  // An async iterable that throws
  async function* throwing(): AsyncGenerator<Uint8Array> {
    yield bytesOf(10, 1);
    throw new RangeError("producer failed");
  }
  await rejects(store.putBlob(key(1), throwing()), (e) => e instanceof RangeError, "throwing iterable");
  assert.equal(blobFileNames(c.fs, c.root), []);
  assert.is(store.commit(), 1n, "the transaction is still usable");
  assert.is(new TextDecoder().decode(store.get(key(5))!), "kept in the transaction");
  store.close();
});

each("a blob id of the wrong length, or a source of the wrong kind, is a TypeError; a read-only or closed store a StateError", async (c) => {
  const store = openStore(c, { create: true });
  await rejects(store.putBlob(new Uint8Array(31), streamOf(new Uint8Array(1))), (e) => e instanceof TypeError && /32 bytes, got 31/.test((e as Error).message), "31-byte id");
  await rejects(store.putBlob("id" as unknown as Uint8Array, streamOf(new Uint8Array(1))), (e) => e instanceof TypeError, "string id");
  await rejects(store.putBlob(key(1), new Uint8Array(5) as never), (e) => e instanceof TypeError && /put\(\)/.test((e as Error).message), "bytes as source");
  await rejects(store.putBlob(key(1), { path: `${c.root}/x`, mvoe: true } as never), (e) => e instanceof TypeError && /mvoe/.test((e as Error).message), "typo in source");
  assert.throws(() => store.openBlob(new Uint8Array(33)), (e: unknown) => e instanceof TypeError);
  assert.throws(() => store.blobPath(new Uint8Array(0)), (e: unknown) => e instanceof TypeError);
  assert.is(store.openBlob(key(1)), undefined, "absent id");
  store.put(key(2), enc.encode("plain"));
  assert.is(store.openBlob(key(2)), undefined, "a plain value is not a blob");
  assert.is(store.blobPath(key(2)), undefined);
  store.commit();
  await store.putBlob(key(3), streamOf(bytesOf(10, 1)));
  store.commit();
  store.close();
  await rejects(store.putBlob(key(1), streamOf(new Uint8Array(1))), (e) => e instanceof StateError && e.code === "ECLOSED", "closed");
  assert.throws(() => store.openBlob(key(3)), (e: unknown) => e instanceof StateError);
  const ro = openStore(c, { readOnly: true });
  await rejects(ro.putBlob(key(1), streamOf(new Uint8Array(1))), (e) => e instanceof StateError && e.code === "EREADONLY", "read-only");
  assert.equal(await readAll(ro.openBlob(key(3))!), bytesOf(10, 1));
  ro.close();
  assert.equal(blobFileNames(c.fs, c.root).length, 1);
});

each("ENOSPC while writing a blob: StorageError ENOSPC naming the temp file, no file left, the store consistent", async (c) => {
  let budget = Infinity;
  const fs = wrapFs(c.fs, {
    write(path, buf) {
      if (!path.endsWith(".tmp") || !path.includes("/blobs/")) return;
      if (buf.length > budget) throw new FsError("ENOSPC", "write", path, `ENOSPC: write ${path}: no space left on device`);
      budget -= buf.length;
    },
  });
  const store = openStore(c, { create: true }, fs);
  const old = bytesOf(50_000, 1);
  await store.putBlob(key(1), streamOf(old));
  store.commit();
  store.put(key(2), enc.encode("same transaction"));
  budget = 2 * MiB;
  const e = await rejects(store.putBlob(key(1), streamOf(bytesOf(5 * MiB, 2), MiB)), (e) => e instanceof StorageError && e.osCode === "ENOSPC", "full disk");
  assert.match((e as Error).message, ".tmp");
  assert.match((e as Error).message, "offset 2097152");
  budget = Infinity;
  assert.equal(blobFileNames(c.fs, c.root), [relBlob(store.blobPath(key(1))!)]);
  assert.equal(await readAll(store.openBlob(key(1))!), old, "the committed blob is untouched");
  assert.is(store.commit(), 2n, "the rest of the transaction commits");
  store.close();
  const again = openStore(c);
  assert.equal(await readAll(again.openBlob(key(1))!), old);
  assert.ok(again.has(key(2)));
  again.close();
});

test("faulty fs: ENOSPC with a partial write (addFault prefix) on a blob temp file is a clean StorageError", async () => {
  const [runtime, c] = adapterCases({ prefix: "segstore-blobs-" });
  runtime.cleanup();
  const fs = c.fs as FaultyFs;
  const store = openStore(c, { create: true });
  fs.addFault({ action: "ENOSPC", ops: ["write"], path: "*.tmp", nth: 2, prefix: "random" });
  await rejects(store.putBlob(key(1), streamOf(bytesOf(3 * MiB, 4), MiB)), (e) => e instanceof StorageError && e.osCode === "ENOSPC", "ENOSPC");
  assert.equal(blobFileNames(fs, c.root), []);
  const data = bytesOf(3 * MiB, 4);
  await store.putBlob(key(1), streamOf(data, MiB));
  store.commit();
  assert.equal(await readAll(store.openBlob(key(1))!), data);
  store.close();
});

each("a source that reuses one buffer for every chunk, in mixed sizes, is stored as it was at each yield", async (c) => {
  // The writer overlaps a chunk's write with its hash, but must finish both before asking for the next
  // chunk: a source may refill its buffer then (as this one does, with new bytes each time).
  const shared = new Uint8Array(MiB + MiB / 2);
  // Big chunks while nothing is gathered are written as they are (the direct path); small ones are
  // gathered (copied), and a gathered run that ends on a buffer boundary gives the direct path back.
  const sizes = [MiB + MiB / 2, MiB, 1, 100 * 1024, MiB - 1 - 100 * 1024, MiB + MiB / 2, MiB, 3, 700 * 1024, 5, MiB + 1, 64 * 1024, 2];
  const expected: Uint8Array[] = [];
  async function* reusing(): AsyncGenerator<Uint8Array> {
    let state = 7;
    for (const n of sizes) {
      state = fillRandom(shared.subarray(0, n), state);
      expected.push(shared.slice(0, n));
      yield shared.subarray(0, n);
    }
  }
  // A slow disk: each write reads its buffer a few ms after it was handed over, well after the hash.
  const store = openStore(c, { create: true }, wrapFs(c.fs, { writeAsyncDelayMs: 3 }));
  const result = await store.putBlob(key(1), reusing());
  store.commit();
  const whole = new Uint8Array(sizes.reduce((a, b) => a + b, 0));
  let at = 0;
  for (const part of expected) {
    whole.set(part, at);
    at += part.length;
  }
  assert.is(result.length, whole.length);
  assert.is(hex(result.hash), hex(await contentId(whole)), "the hash is of the bytes as yielded");
  assert.ok(equalBytes(await readAll(store.openBlob(key(1))!), whole), "the file holds the bytes as yielded");
  store.close();
});

each("writeback starts during a long blob write, and a failed background fdatasync fails putBlob cleanly", async (c) => {
  let backgroundSyncs = 0;
  let failSync = false;
  const fs = wrapFs(c.fs, {
    datasyncAsync(path) {
      if (!path.endsWith(".tmp")) return;
      backgroundSyncs++;
      if (failSync) throw new FsError("EIO", "fdatasync", path, `EIO: fdatasync ${path}`);
    },
  });
  const store = openStore(c, { create: true }, fs);
  const data = bytesOf(BLOB_SYNC_BEHIND_BYTES * 2 + MiB, 5);
  await store.putBlob(key(1), streamOf(data, MiB));
  store.commit();
  assert.ok(backgroundSyncs >= 1, `a background fdatasync ran during the write (${backgroundSyncs})`);
  assert.ok(equalBytes(await readAll(store.openBlob(key(1))!), data));
  failSync = true;
  const e = await rejects(store.putBlob(key(2), streamOf(data, MiB)), (err) => err instanceof StorageError && err.osCode === "EIO", "EIO on the background fdatasync");
  assert.match((e as Error).message, /background fdatasync/);
  failSync = false;
  assert.equal(blobFileNames(c.fs, c.root), [relBlob(store.blobPath(key(1))!)], "the failed write left no file");
  await store.putBlob(key(2), streamOf(bytesOf(10, 6)));
  assert.is(store.commit(), 2n, "usable afterwards");
  store.close();
});

each("EIO on the rename at commit: commit throws StorageError, the transaction is rolled back, no file is left, the old blob stays", async (c) => {
  let failRename = false;
  const fs = wrapFs(c.fs, {
    rename(from) {
      if (failRename && from.endsWith(".tmp") && from.includes("/blobs/")) throw new FsError("EIO", "rename", from, `EIO: rename ${from}`);
    },
  });
  const store = openStore(c, { create: true }, fs);
  const old = bytesOf(40_000, 1);
  await store.putBlob(key(1), streamOf(old));
  store.commit();
  await store.putBlob(key(1), streamOf(bytesOf(40_000, 2)));
  await store.putBlob(key(2), streamOf(bytesOf(40_000, 3)));
  failRename = true;
  assert.throws(() => store.commit(), (e: unknown) => e instanceof StorageError && /rolled back/.test((e as Error).message));
  failRename = false;
  assert.equal(blobFileNames(c.fs, c.root), [relBlob(store.blobPath(key(1))!)]);
  assert.equal(await readAll(store.openBlob(key(1))!), old);
  assert.is(store.has(key(2)), false);
  await store.putBlob(key(2), streamOf(bytesOf(10, 3)));
  assert.is(store.commit(), 2n, "usable afterwards");
  store.close();
});

// ---------------------------------------------------------------------------
// Crashes: a power loss at each mutation of a blob commit

/** The blob commit under test, on a store whose disk already holds `before`. */
interface CrashScenario {
  name: string;
  /** Sets up the store before the measured phase (committed), on a fresh disk. */
  setup(store: Store): Promise<void>;
  /** The measured phase: blob writes and the commit. */
  run(store: Store): Promise<void>;
  /** What a reopened store may hold for key(1): these byte strings, or undefined for absent. */
  before: Uint8Array | undefined;
  after: Uint8Array | undefined;
}

const OLD = bytesOf(2 * MiB + 100, 21);
const NEW = bytesOf(2 * MiB + 300, 22);

const SCENARIOS: CrashScenario[] = [
  {
    name: "first blob of the store (creates blobs/ and blobs/<xx>)",
    async setup(store) {
      store.put(key(50), enc.encode("plain"));
    },
    async run(store) {
      await store.putBlob(key(1), streamOf(NEW, 512 * 1024));
      store.commit();
    },
    before: undefined,
    after: NEW,
  },
  {
    name: "overwrite of a committed blob",
    async setup(store) {
      await store.putBlob(key(1), streamOf(OLD, MiB));
    },
    async run(store) {
      await store.putBlob(key(1), streamOf(NEW, 700 * 1024));
      store.commit();
    },
    before: OLD,
    after: NEW,
  },
  {
    name: "put-by-move over a committed blob",
    async setup(store) {
      await store.putBlob(key(1), streamOf(OLD, MiB));
    },
    async run(store) {
      await store.putBlob(key(1), { path: "/root/upload.bin", move: true });
      store.commit();
    },
    before: OLD,
    after: NEW,
  },
  {
    name: "delete of a committed blob",
    async setup(store) {
      await store.putBlob(key(1), streamOf(OLD, MiB));
    },
    async run(store) {
      store.delete(key(1));
      store.commit();
    },
    before: OLD,
    after: undefined,
  },
];

/** A fresh disk with the scenario's committed state, and the store left open on it. */
async function crashSetup(s: CrashScenario, seed: number): Promise<{ fs: FaultyFs; store: Store }> {
  const fs = new FaultyFs({ seed });
  fs.mkdirp("/root");
  fs.writeFile("/root/upload.bin", NEW);
  const store = Store.open("/root/store", { fs, create: true });
  await s.setup(store);
  store.commit();
  return { fs, store };
}

/** After a crash: key(1) holds exactly `before` or `after` (verified), and blobs/ holds exactly its file. */
async function crashCheck(disk: FaultyFs, s: CrashScenario, committed: boolean, where: string): Promise<void> {
  const store = Store.open("/root/store", { fs: disk });
  try {
    const stream = store.openBlob(key(1));
    const got = stream === undefined ? undefined : await readAll(stream);
    const isBefore = got === undefined ? s.before === undefined : s.before !== undefined && equalBytes(got, s.before);
    const isAfter = got === undefined ? s.after === undefined : s.after !== undefined && equalBytes(got, s.after);
    assert.ok(isBefore || isAfter, `${where}: key holds neither the old nor the new blob (${got?.length} bytes)`);
    if (committed) assert.ok(isAfter, `${where}: commit() returned, yet the old state came back`);
    const expected = store.blobPath(key(1)) === undefined ? [] : [relBlob(store.blobPath(key(1))!)];
    assert.equal(blobFileNames(disk, "/root"), expected, `${where}: no temp file or orphan left after open`);
  } finally {
    store.close();
  }
}

const CRASH_MODES: CrashOptions[] = [
  { mode: "drop", entries: "durable" },
  { mode: "keep", entries: "current" },
  { mode: "torn", entries: "mixed" },
  { mode: "zeros", entries: "durable" },
  { mode: "mixed", entries: "mixed" },
];

for (const s of SCENARIOS) {
  test(`faulty fs: power loss at each write/sync/rename/unlink of a blob commit (${s.name}), then reopen: old or new blob, never partial, no orphan`, async () => {
    // The reference run counts the mutations of the measured phase.
    const ref = await crashSetup(s, 1);
    const start = ref.fs.countOps({ ops: "mutations" });
    await s.run(ref.store);
    const total = ref.fs.countOps({ ops: "mutations" }) - start;
    const kinds = new Set(ref.fs.log.slice(-200).map((e) => e.op));
    assert.ok(total >= (s.after === undefined ? 3 : 6), `the blob commit makes several mutations (${total})`);
    if (process.env.SEGSTORE_TEST_VERBOSE) console.log(`${s.name}: ${total} mutations: ${ref.fs.log.slice(-total * 3).filter((e) => e.op !== "read" && e.op !== "size" && e.op !== "stat").map((e) => `${e.op} ${e.path.replace(/.*\//, "")}`).join(", ")}`);
    if (s.after !== undefined) for (const k of ["write", "datasync", "rename", "syncDir"]) assert.ok(kinds.has(k as never), `the commit does ${k}`);
    ref.store.close();
    await crashCheck(ref.fs.crash(), s, true, "no crash");
    for (let n = 1; n <= total; n++) {
      for (let m = 0; m < CRASH_MODES.length; m++) {
        const { fs, store } = await crashSetup(s, n * 10 + m);
        const fault = fs.powerLossAt(n, { ops: "mutations" });
        let committed = false;
        try {
          await s.run(store);
          committed = true;
        } catch (e) {
          assert.ok(e instanceof Error, String(e));
        }
        assert.ok(fault.fired === 1 || committed, `op ${n}: the fault fired`);
        const where = `${s.name}, power loss at mutation ${n}/${total}, crash ${JSON.stringify(CRASH_MODES[m])}, ${fs}`;
        await crashCheck(fs.crash({ ...CRASH_MODES[m], seed: n * 7 + m }), s, committed, where);
      }
    }
  });
}

test.run();
