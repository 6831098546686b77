// runtimes: node
// Real separate client processes, Node and Deno mixed, against a server in
// this process (this suite drives both runtimes itself, so it runs under
// Node only): ten processes load one 64 MiB blob at once through a shared
// cache and the server sends it once; a client killed mid-download leaves
// the cache usable; a client killed mid-upload leaves nothing on the server.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { contentId } from "../src/contentid.ts";
import {
  hex, key, NetChild, pseudoRandomBytes, startServer, streamOf, TOKEN, waitFor, type Runtime, type ServedStore,
} from "./_support/net-harness.ts";

const MiB = 1024 * 1024;
/** The blob every reader loads: 64 MiB, as the issue asks. */
const BIG_BLOB_BYTES = 64 * MiB;
/** Readers started together. */
const READERS = 10;

function runtimes(n: number): Runtime[] {
  const hasDeno = existsSync(join(process.cwd(), "node_modules", ".bin", "deno"));
  return Array.from({ length: n }, (_, i) => (hasDeno && i % 2 === 1 ? "deno" : "node"));
}

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

async function withBlob(bytes: Uint8Array, fn: (h: ServedStore, idHex: string) => Promise<void>): Promise<void> {
  const h = await startServer({ transport: "tcp" });
  const children: NetChild[] = [];
  try {
    const w = await h.connect();
    await w.putBlob(key(1), streamOf(bytes, MiB));
    await w.commit();
    await w.close();
    await fn(h, hex(key(1)));
  } finally {
    for (const c of children) await c.kill();
    await h.close();
  }
}

test(`${READERS} client processes load the same 64 MiB blob at once: the server sends it once, all read the same bytes`, async () => {
  const bytes = pseudoRandomBytes(BIG_BLOB_BYTES, 42);
  const expected = hex(await contentId(bytes));
  await withBlob(bytes, async (h, idHex) => {
    const cacheDir = join(h.dir.path, "cache");
    const children = runtimes(READERS).map((rt) => new NetChild(rt, ["read-blob", h.url, TOKEN, cacheDir, idHex]));
    try {
      await Promise.all(children.map((c) => c.expect("ready")));
      for (const c of children) c.send("go");
      const lines = await Promise.all(children.map((c) => c.expect("blob ", 120_000)));
      for (const line of lines) assert.is(line, `blob ${expected} ${BIG_BLOB_BYTES}`);
      const codes = await Promise.all(children.map((c) => c.exited));
      assert.equal(codes, children.map(() => 0));
    } finally {
      for (const c of children) await c.kill();
    }
    const s = h.server.stats();
    assert.is(s.blobDownloads, 1, "one download for ten processes");
    assert.is(s.blobBytesSent, BIG_BLOB_BYTES);
    const cached = filesUnder(cacheDir);
    assert.equal(cached.filter((f) => f.endsWith(".dl")), [], "no download file left");
    assert.is(cached.filter((f) => !f.endsWith(".lock")).length, 1, "one cached blob");
  });
});

test("a client killed mid-download leaves the cache usable: the next reader downloads again and gets the right bytes", async () => {
  const bytes = pseudoRandomBytes(16 * MiB, 9);
  const expected = hex(await contentId(bytes));
  await withBlob(bytes, async (h, idHex) => {
    const cacheDir = join(h.dir.path, "cache");
    for (const rt of runtimes(2)) {
      const slow = new NetChild(rt, ["slow-download", h.url, TOKEN, cacheDir, idHex]);
      try {
        await slow.expect("downloading");
      } finally {
        await slow.kill();
      }
      assert.ok(filesUnder(cacheDir).some((f) => f.endsWith(".dl")), `${rt}: a partial .dl is left by the killed client`);
      const reader = new NetChild(rt, ["read-blob", h.url, TOKEN, cacheDir, idHex]);
      try {
        await reader.expect("ready");
        reader.send("go");
        assert.is(await reader.expect("blob ", 60_000), `blob ${expected} ${bytes.length}`);
      } finally {
        await reader.kill();
      }
      assert.equal(filesUnder(cacheDir).filter((f) => f.endsWith(".dl")), [], `${rt}: the .dl was replaced`);
      // Start the next round from an empty cache.
      for (const f of filesUnder(cacheDir)) (await import("node:fs")).unlinkSync(join(cacheDir, f));
    }
    assert.is(h.server.stats().blobDownloads, 2, "each complete download counted once; the killed ones never completed");
  });
});

test("a client killed mid-upload leaves nothing behind on the server", async () => {
  const h = await startServer({ transport: "tcp" });
  try {
    const watcher = await h.connect();
    for (const rt of runtimes(2)) {
      const child = new NetChild(rt, ["hang-upload", h.url, TOKEN, "-", hex(key(5))]);
      try {
        await child.expect("uploading");
        await waitFor(() => h.server.stats().blobBytesReceived >= 3 * MiB, "3 MiB to reach the server");
        assert.ok(filesUnder(join(h.storePath, "blobs")).some((f) => f.endsWith(".tmp")), `${rt}: the upload is being staged`);
      } finally {
        await child.kill();
      }
      await waitFor(() => h.server.stats().connections === 1, "the server to notice the dead client");
      await waitFor(() => !filesUnder(join(h.storePath, "blobs")).some((f) => f.endsWith(".tmp")), "the staged file to go");
      assert.is(await watcher.has(key(5)), false);
    }
    assert.is(h.store.stats().blobs, 0);
  } finally {
    await h.close();
  }
});

test.run();
