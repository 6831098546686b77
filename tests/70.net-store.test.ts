/**
 * The store API through a client (the main behaviours of 40.store, async),
 * over real sockets: TCP on 127.0.0.1 with a token, and a unix socket.
 * Then what only the server adds: conflicts between two clients (nothing
 * applied), invalidations reaching other clients' caches, group commit,
 * pipelining, read-only serving, and the client's lifecycle.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import {
  ConflictError, MAX_OBJECT_SIZE, SegstoreError, StateError,
} from "../src/format.ts";
import type { RemoteStore } from "../src/net/client.ts";
import { IN_FLIGHT_MAX } from "../src/net/protocol.ts";
import { key, rejects, startServer, text, val, waitFor, type ServedStore } from "./_support/net-harness.ts";

function each(name: string, fn: (h: ServedStore) => Promise<void>, storeOptions = {}): void {
  for (const transport of ["tcp", "unix"] as const) {
    test(`${transport}: ${name}`, async () => {
      const h = await startServer({ transport, storeOptions });
      try {
        await fn(h);
      } finally {
        await h.close();
      }
    });
  }
}

async function snapshot(r: RemoteStore): Promise<Map<string, string>> {
  const dec = new TextDecoder();
  const ids = (await r.list()).map((id) => dec.decode(id)).sort();
  const values = await r.getMany(ids.map((s) => new TextEncoder().encode(s)));
  return new Map(ids.map((id, i) => [id, text(values[i])!]));
}

// ---------------------------------------------------------------------------
// The store's behaviours, through a client

each("seed test1: 100 puts, delete one, commit, server restart, the rest intact", async (h) => {
  const r = await h.connect();
  for (let x = 0; x < 100; x++) await r.put(key(x), val("SOMEDATA"));
  assert.is(text(await r.get(key(50))), "SOMEDATA");
  assert.is(await r.delete(key(50)), true);
  assert.is(await r.get(key(50)), undefined);
  await r.commit();
  await r.close();
  await h.restart();
  const r2 = await h.connect();
  assert.is(await r2.get(key(50)), undefined);
  for (let x = 0; x < 100; x++) if (x !== 50) assert.is(text(await r2.get(key(x))), "SOMEDATA");
  assert.is((await r2.stats()).keys, 99);
});

each("seed test2: two sequential transactions get txids 1 and 2", async (h) => {
  const r = await h.connect();
  await r.put(key(0), val("foo"));
  await r.put(key(1), val("foo"));
  assert.is(await r.commit(), 1n);
  await r.delete(key(0));
  await r.put(key(1), val("bar"));
  assert.is(await r.commit(), 2n);
  assert.is(text(await r.get(key(1))), "bar");
  assert.is(await r.get(key(0)), undefined);
  assert.is(await r.commit(), 2n, "an empty commit returns the last txid");
});

each("reads see the client's own uncommitted writes; other clients do not", async (h) => {
  const a = await h.connect();
  const b = await h.connect();
  await a.put(key(1), val("mine"));
  assert.is(text(await a.get(key(1))), "mine");
  assert.is(await a.has(key(1)), true);
  assert.equal((await a.list()).length, 1);
  assert.is(await b.get(key(1)), undefined);
  assert.is(await b.has(key(1)), false);
  await a.commit();
  // b cached "absent": the cache is as fresh as the invalidations that have arrived; sync() waits for them.
  await b.sync();
  assert.is(text(await b.get(key(1))), "mine");
});

each("rollback() discards puts, overwrites and deletes", async (h) => {
  const r = await h.connect();
  await r.put(key(1), val("one"));
  await r.put(key(2), val("two"));
  await r.commit();
  await r.put(key(1), val("changed"));
  await r.delete(key(2));
  await r.put(key(3), val("new"));
  await r.rollback();
  assert.equal(await snapshot(r), new Map([[new TextDecoder().decode(key(1)), "one"], [new TextDecoder().decode(key(2)), "two"]]));
  assert.is(await r.commit(), 1n, "nothing to commit after rollback");
});

each("uncommitted writes are gone when the client disconnects", async (h) => {
  const a = await h.connect();
  await a.put(key(1), val("committed"));
  await a.commit();
  await a.put(key(2), val("never"));
  await a.close();
  const b = await h.connect();
  assert.is(await b.get(key(2)), undefined);
  assert.is(text(await b.get(key(1))), "committed");
  assert.is(h.store.stats().keys, 1);
});

each("getMany returns values in the order asked, undefined for missing", async (h) => {
  const r = await h.connect();
  for (let i = 0; i < 10; i++) await r.put(key(i), val(`v${i}`));
  await r.commit();
  const b = await h.connect();
  const got = await b.getMany([key(3), key(99), key(0), key(9), key(3)]);
  assert.equal(got.map(text), ["v3", undefined, "v0", "v9", "v3"]);
  await b.put(key(99), val("local"));
  assert.equal((await b.getMany([key(99), key(1)])).map(text), ["local", "v1"]);
});

each("getMany past the reply's byte budget fetches the rest one by one", async (h) => {
  const r = await h.connect();
  const big = new Uint8Array(3 * 1024 * 1024);
  for (let i = 0; i < 4; i++) await r.put(key(i), big.fill(i + 1));
  await r.commit();
  const b = await h.connect({ valueCacheBytes: 0 });
  const got = await b.getMany([key(0), key(1), key(2), key(3)]);
  assert.equal(got.map((v) => [v!.length, v![0]]), [[big.length, 1], [big.length, 2], [big.length, 3], [big.length, 4]]);
});

each("list() gives every live id; stats() counts them", async (h) => {
  const r = await h.connect();
  for (let i = 0; i < 20000; i++) await r.put(key(i), val("x"));
  await r.commit();
  await r.delete(key(7));
  await r.commit();
  const b = await h.connect();
  const ids = await b.list();
  assert.is(ids.length, 19999);
  assert.is(new Set(ids.map((id) => new TextDecoder().decode(id))).size, 19999);
  const stats = await b.stats();
  assert.is(stats.keys, 19999);
  assert.is(stats.lastTxid, 2n);
  assert.is(typeof stats.totalBytes, "number");
});

each("empty values and a MAX_OBJECT_SIZE value round-trip; one byte more is refused", async (h) => {
  const r = await h.connect();
  const max = new Uint8Array(MAX_OBJECT_SIZE).fill(0x5a);
  await r.put(key(1), new Uint8Array(0));
  await r.put(key(2), max);
  await rejects(() => r.put(key(3), new Uint8Array(MAX_OBJECT_SIZE + 1)), (e: unknown) => e instanceof RangeError);
  await r.commit();
  const b = await h.connect();
  assert.equal(await b.get(key(1)), new Uint8Array(0));
  const got = await b.get(key(2));
  assert.is(got!.length, MAX_OBJECT_SIZE);
  assert.ok(got!.every((x) => x === 0x5a));
});

each("compact() and checkpoint() run on the server's store", async (h) => {
  const r = await h.connect();
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 200; i++) await r.put(key(i), new Uint8Array(500).fill(round));
    await r.commit();
  }
  const result = await r.compact();
  assert.is(typeof result.segmentsCompacted, "number");
  await r.checkpoint();
  assert.ok((await r.stats()).checkpoint !== null);
  assert.equal(await r.get(key(5)), new Uint8Array(500).fill(4));
}, { maxSegmentSize: 64 * 1024, autoCompact: false });

each("bad arguments: wrong key length, non-bytes value", async (h) => {
  const r = await h.connect();
  await rejects(() => r.put(new Uint8Array(31), val("x")), (e: unknown) => e instanceof TypeError);
  await rejects(() => r.get(new Uint8Array(33)), (e: unknown) => e instanceof TypeError);
  await rejects(() => r.put(key(1), "text" as unknown as Uint8Array), (e: unknown) => e instanceof TypeError);
  await rejects(() => r.getMany([key(1), new Uint8Array(2)]), (e: unknown) => e instanceof TypeError);
  // The connection is fine afterwards.
  await r.put(key(1), val("ok"));
  assert.is(await r.commit(), 1n);
});

each("after close() every method throws StateError ECLOSED; close() is idempotent", async (h) => {
  const r = await h.connect();
  await r.close();
  await r.close();
  const closed = (e: unknown) => e instanceof StateError && e.code === "ECLOSED";
  await rejects(() => r.get(key(1)), closed);
  await rejects(() => r.put(key(1), val("x")), closed);
  await rejects(() => r.commit(), closed);
  await rejects(() => r.list(), closed);
  await rejects(() => r.stats(), closed);
  await rejects(() => r.openBlob(key(1)), closed);
  assert.ok(r.closed);
});

// ---------------------------------------------------------------------------
// What the server adds

each("conflict: two clients read and write one key; the second commit fails and applies nothing", async (h) => {
  const a = await h.connect();
  const b = await h.connect();
  await a.put(key(1), val("v1"));
  await a.commit();
  assert.is(text(await a.get(key(1))), "v1");
  assert.is(text(await b.get(key(1))), "v1");
  await a.put(key(1), val("from a"));
  await b.put(key(1), val("from b"));
  await b.put(key(2), val("b's other write"));
  await a.commit();
  let conflict: unknown;
  try {
    await b.commit();
  } catch (e) {
    conflict = e;
  }
  assert.ok(conflict instanceof ConflictError, `ConflictError, got ${conflict}`);
  assert.equal((conflict as ConflictError).keys.length, 1);
  assert.is(h.store.get(key(2)), undefined, "nothing of the refused transaction was applied");
  assert.is(text(h.store.get(key(1))), "from a");
  // The failed commit rolled b back; reading again and retrying works.
  assert.is(b.inTransaction, false);
  assert.is(text(await b.get(key(1))), "from a");
  await b.put(key(1), val("from b, retried"));
  await b.commit();
  await a.sync();
  assert.is(text(await a.get(key(1))), "from b, retried");
});

each("conflict: a key deleted by another client since it was read", async (h) => {
  const a = await h.connect();
  const b = await h.connect();
  await a.put(key(1), val("x"));
  await a.commit();
  assert.is(await b.has(key(1)), true);
  await a.delete(key(1));
  await a.commit();
  await b.put(key(1), val("b thinks it exists"));
  await rejects(() => b.commit(), (e: unknown) => e instanceof ConflictError);
});

each("no conflict for writes to different keys, or a blind write after the change was heard of", async (h) => {
  const a = await h.connect();
  const b = await h.connect();
  await a.put(key(1), val("a"));
  await b.put(key(2), val("b"));
  await a.commit();
  await b.commit();
  // b never read key 1; once the invalidation has arrived, a blind write is based on news it has.
  await waitFor(() => b.lastTxid >= 1n, "b hears of a's commit");
  await b.put(key(1), val("blind"));
  await b.commit();
  assert.is(text(h.store.get(key(1))), "blind");
});

each("invalidations: a commit drops the keys from other clients' caches, with the txid", async (h) => {
  const a = await h.connect();
  const b = await h.connect();
  await a.put(key(1), val("old"));
  await a.put(key(2), val("other"));
  await a.commit();
  assert.is(text(await b.get(key(1))), "old"); // now in b's cache
  const heard: { ids: string[]; txid: bigint }[] = [];
  b.onInvalidate((ids, txid) => heard.push({ ids: ids.map((id) => new TextDecoder().decode(id).trim()), txid }));
  let aHeard = 0;
  a.onInvalidate(() => aHeard++);
  await a.put(key(1), val("new"));
  const txid = await a.commit();
  await waitFor(() => heard.length === 1, "b's invalidation");
  assert.equal(heard, [{ ids: ["1"], txid }]);
  assert.is(text(await b.get(key(1))), "new", "b's cache dropped the old value");
  assert.is(aHeard, 0, "the committer is not told of its own commit");
});

test("group commit: concurrent commits from 8 clients share fdatasyncs, and all land", async () => {
  const h = await startServer({ transport: "unix" });
  try {
    const clients = await Promise.all(Array.from({ length: 8 }, () => h.connect()));
    const perClient = 25;
    await Promise.all(clients.map(async (c, ci) => {
      for (let i = 0; i < perClient; i++) {
        await c.put(key(ci * 1000 + i), val(`${ci}:${i}`));
        await c.commit();
      }
    }));
    const s = h.server.stats();
    assert.is(s.commits, 8 * perClient);
    assert.ok(s.groupCommits < s.commits, `${s.groupCommits} store commits carried ${s.commits} client commits`);
    assert.is(h.store.stats().keys, 8 * perClient);
    assert.is(text(h.store.get(key(7 * 1000 + 24))), "7:24");
  } finally {
    await h.close();
  }
});

each("pipelining: many more gets in flight than IN_FLIGHT_MAX all answer, in any order", async (h) => {
  const r = await h.connect();
  for (let i = 0; i < 3000; i++) await r.put(key(i), val(`v${i}`));
  await r.commit();
  const b = await h.connect();
  const n = IN_FLIGHT_MAX * 3;
  const got = await Promise.all(Array.from({ length: n }, (_, i) => b.get(key(i % 3000))));
  for (let i = 0; i < n; i++) assert.is(text(got[i]), `v${i % 3000}`);
});

test("a read-only store is served read-only: reads work, writes say EREADONLY", async () => {
  const h = await startServer({ transport: "unix" });
  try {
    const w = await h.connect();
    await w.put(key(1), val("x"));
    await w.commit();
    await w.close();
  } finally {
    // keep the directory: reopen read-only below
  }
  await h.server.close();
  h.store.close();
  const { Store } = await import("../src/store.ts");
  const { runtimeFs } = await import("../adapters/runtime.ts");
  const { serve } = await import("../src/net/server.ts");
  const { connect } = await import("../src/net/client.ts");
  const store = Store.open(h.storePath, { fs: runtimeFs, readOnly: true });
  const server = await serve(store, { listen: `unix:${h.dir.path}/ro.sock` });
  try {
    const r = await connect(server.url, { fs: runtimeFs });
    assert.is(text(await r.get(key(1))), "x");
    await rejects(() => r.put(key(2), val("y")), (e: unknown) => e instanceof StateError && e.code === "EREADONLY");
    await r.close();
  } finally {
    await server.close();
    store.close();
    h.dir.cleanup();
  }
});

each("the server keeps its store: close() of the server leaves it open and consistent", async (h) => {
  const r = await h.connect();
  await r.put(key(1), val("x"));
  await r.commit();
  await r.put(key(2), val("uncommitted"));
  await h.server.close();
  await waitFor(() => r.closed, "the client sees the server go");
  await rejects(() => r.get(key(1)), (e: unknown) => e instanceof SegstoreError);
  assert.is(h.store.closed, false);
  assert.is(text(h.store.get(key(1))), "x");
  assert.is(h.store.get(key(2)), undefined);
  assert.is(h.store.inTransaction, false);
});

test.run();
