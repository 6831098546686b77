/**
 * A crowd on one server: 50 connections at once (TCP on 127.0.0.1, with a
 * token), 40 well-behaved clients and 10 misbehaving raw sockets. The
 * clients commit and read back their own keys (half of them with the value
 * cache off, so every read reaches the server) and, in pairs, provoke a
 * conflict on a shared key and check the invalidation. Meanwhile the raw
 * sockets: idle without a hello, a wrong token, a call before the hello, a
 * wrong protocol version, garbage, a truncated frame left open, an
 * oversized frame, a flood of 3 × IN_FLIGHT_MAX pipelined calls, a peer
 * that asks for 48 MiB of values and stops reading, and one that
 * disconnects in the middle of a commit's frame.
 *
 * Checked: every client's data is exact, the misbehaving peers get their
 * errors and are closed (the idle ones at the hello timeout), the flood is
 * answered call for call, the server's unsent output for the peer that
 * stopped reading stays near OUTPUT_HIGH_WATER_BYTES (it stops reading that
 * peer) and the peer is dropped once an invalidation would pile on
 * (`outputQueueMax`), nothing of the cut commit is applied, and a fresh
 * client connects and reads everything at the end. Then: a list of
 * 320,000 ids (10.4 MiB) goes out as the connection drains, and serve()
 * refuses bad limits.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { encode } from "@msgpack/msgpack";
import { runtimeFs } from "../adapters/runtime.ts";
import type { Connection } from "../src/fs.ts";
import { ConflictError } from "../src/format.ts";
import { Store } from "../src/store.ts";
import { authProof, randomNonce, tokenBytes } from "../src/net/auth.ts";
import { OUTPUT_HIGH_WATER_BYTES } from "../src/net/channel.ts";
import { connect, type RemoteStore } from "../src/net/client.ts";
import {
  createCodec, decodePayload, FRAME_SIZE_MAX, FrameReader, IN_FLIGHT_MAX, PROTOCOL_VERSION, writeFrameHeader,
} from "../src/net/protocol.ts";
import { serve } from "../src/net/server.ts";
import { bytesEqual, fromHex, hex, key, pseudoRandomBytes, rejects, text, TOKEN, val, waitFor } from "./_support/net-harness.ts";
import { tempDir } from "./_support/tempdir.ts";

/** Well-behaved clients, and rounds of put/commit/get each. */
const CLIENTS = 40;
const ROUNDS = 16;
const KEYS_PER_CLIENT = 4;
/** The server's hello timeout in this test (the default is 10 s): the idle peers are closed while the crowd works. */
const HELLO_TIMEOUT_TEST_MS = 1000;
/** The value the non-reading peer asks for, and how many times. */
const BIG_VALUE_BYTES = 1024 * 1024;
const BIG_GETS = 48;

type Message = [number, unknown, unknown];

/** A connection speaking bytes: collects what the server sends until told to stop reading. */
class RawPeer {
  readonly messages: Message[] = [];
  ended = false;
  endedAt = 0;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #codec = createCodec();
  #reading = true;

  /** `openedAt`: taken before the connect, so no server timer can have started earlier. */
  constructor(readonly conn: Connection, readonly openedAt: number) {
    this.#writer = conn.writable.getWriter();
    this.#writer.closed.catch(() => {});
    void this.#read();
  }

  static async open(url: string): Promise<RawPeer> {
    const openedAt = performance.now();
    return new RawPeer(await runtimeFs.connect!(url), openedAt);
  }

  async #read(): Promise<void> {
    const reader = this.conn.readable.getReader();
    const frames = new FrameReader();
    try {
      // Once stopped, the socket's queue fills and TCP stops the server's sends: nothing more is read, ever.
      while (this.#reading) {
        const { done, value } = await reader.read();
        if (done) break;
        for (const p of frames.push(value)) this.messages.push(decodePayload(this.#codec, p) as Message);
      }
      if (!this.#reading) return;
    } catch {
      // reset by the server: an end all the same
    }
    this.ended = true;
    this.endedAt = performance.now();
  }

  /** Stops reading (after the read in progress, if any). */
  stopReading(): void {
    this.#reading = false;
  }

  async send(bytes: Uint8Array): Promise<void> {
    await this.#writer.write(bytes).catch(() => {});
  }

  static frame(message: unknown): Uint8Array {
    const payload = encode(message, { useBigInt64: true });
    const frame = new Uint8Array(4 + payload.length);
    writeFrameHeader(frame, 0, payload.length);
    frame.set(payload, 4);
    return frame;
  }

  async sendMessages(messages: unknown[]): Promise<void> {
    const frames = messages.map(RawPeer.frame);
    const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    let at = 0;
    for (const f of frames) {
      all.set(f, at);
      at += f.length;
    }
    await this.send(all);
  }

  /** The server's hello push (its nonce). */
  async hello(): Promise<Record<string, unknown>> {
    await waitFor(() => this.messages.length > 0, "the server's hello");
    const m = this.messages[0]!;
    assert.is(m[1], "hello");
    return (m[2] as Record<string, unknown>[])[0]!;
  }

  /** Completes the hello as a client does, proving it knows `token`; resolves with the reply (msgid 1). */
  async authenticate(token: string): Promise<Message> {
    const serverNonce = (await this.hello()).nonce as Uint8Array;
    const nonce = randomNonce();
    const proof = await authProof(tokenBytes(token, "test"), "client", serverNonce, nonce);
    await this.sendMessages([[1, "hello", [{ protocol: PROTOCOL_VERSION, nonce, proof }]]]);
    return await this.reply(1);
  }

  async reply(msgid: number, ms?: number): Promise<Message> {
    await waitFor(() => this.ended || this.messages.some((m) => m[0] === msgid), `the reply to call ${msgid}`, ms);
    const m = this.messages.find((m) => m[0] === msgid);
    if (m === undefined) throw new Error(`the connection ended before the reply to call ${msgid}`);
    return m;
  }

  /** The codes of the errors the server sent: error replies and error pushes. */
  errorCodes(): string[] {
    const out: string[] = [];
    for (const m of this.messages) {
      const error = m[0] === 0 ? (m[1] === "error" ? (m[2] as unknown[])[0] : null) : m[1];
      if (Array.isArray(error)) out.push(String((error[2] as Record<string, unknown>).code));
    }
    return out;
  }

  async waitEnded(what: string, ms?: number): Promise<void> {
    await waitFor(() => this.ended, what, ms);
  }

  close(): void {
    this.conn.close();
  }
}

/** A value of 1 to ~6 KiB for client c, round r, key j: its bytes say whose it is. */
function valueFor(c: number, r: number, j: number): Uint8Array {
  const size = 1 + ((c * 7919 + r * 104729 + j * 1299709) % 6000);
  const v = pseudoRandomBytes(size, c * 1_000_003 + r * 1009 + j + 1);
  v.set(val(`${c}/${r}/${j}`).subarray(0, size));
  return v;
}

const ownKey = (c: number, j: number) => key(100_000 + c * 10 + j);
const pairKey = (p: number) => key(200_000 + p);
const FLOOD_KEY = key(300_001);
const BIG_KEY = key(300_002);
const CUT_KEY = key(300_003);

/** A one-shot signal between two clients of a pair. */
function signal(): { fire(): void; wait: Promise<void> } {
  let fire!: () => void;
  const wait = new Promise<void>((resolve) => (fire = resolve));
  return { fire, wait };
}

interface Pair {
  aRead: ReturnType<typeof signal>;
  bCommitted: ReturnType<typeof signal>;
  aCommitted: ReturnType<typeof signal>;
}

/**
 * Client c of a pair {A = 2p, B = 2p + 1} on the shared key: A reads it, B
 * overwrites it and commits, A's write based on its read must be refused
 * (ConflictError naming the key, nothing applied), A sees B's value after
 * the invalidation, retries and commits; B then sees A's value.
 */
async function pairCheck(r: RemoteStore, c: number, pair: Pair, invalidated: Set<string>): Promise<void> {
  const p = c >> 1;
  const shared = pairKey(p);
  if (c % 2 === 0) {
    assert.is(await r.get(shared), undefined, `pair ${p}: nothing under the shared key yet`);
    pair.aRead.fire();
    await pair.bCommitted.wait;
    await r.put(shared, val(`A${p}`));
    await rejects(() => r.commit(), (e) => e instanceof ConflictError && e.keys.includes(hex(shared)), `pair ${p}: A's commit over B's`);
    await r.sync();
    assert.ok(invalidated.has(hex(shared)), `pair ${p}: A was sent the invalidation of the shared key`);
    assert.is(text(await r.get(shared)), `B${p}`, `pair ${p}: A reads B's value`);
    await r.put(shared, val(`A${p}`));
    await r.commit();
    pair.aCommitted.fire();
  } else {
    await pair.aRead.wait;
    await r.put(shared, val(`B${p}`));
    await r.commit();
    pair.bCommitted.fire();
    await pair.aCommitted.wait;
    await r.sync();
    assert.ok(invalidated.has(hex(shared)), `pair ${p}: B was sent the invalidation of A's retry`);
    assert.is(text(await r.get(shared)), `A${p}`, `pair ${p}: B reads A's retry`);
  }
}

/** One well-behaved client: rounds of puts (and some deletes) of its own keys, a commit, and every value read back. */
async function worker(r: RemoteStore, c: number, pair: Pair, expected: Map<string, Uint8Array | undefined>): Promise<void> {
  const invalidated = new Set<string>();
  r.onInvalidate((ids) => {
    for (const id of ids) invalidated.add(hex(id));
  });
  for (let round = 0; round < ROUNDS; round++) {
    if (round === ROUNDS >> 1) await pairCheck(r, c, pair, invalidated);
    for (let j = 0; j < KEYS_PER_CLIENT; j++) {
      const id = ownKey(c, j);
      if ((round + j) % 5 === 4) {
        await r.delete(id);
        expected.set(hex(id), undefined);
      } else {
        const v = valueFor(c, round, j);
        await r.put(id, v);
        expected.set(hex(id), v);
      }
    }
    await r.commit();
    // Read together: batched into one getMany.
    const got = await Promise.all(Array.from({ length: KEYS_PER_CLIENT }, (_, j) => r.get(ownKey(c, j))));
    for (let j = 0; j < KEYS_PER_CLIENT; j++) {
      const want = expected.get(hex(ownKey(c, j)));
      const v = got[j];
      assert.ok(want === undefined ? v === undefined : v !== undefined && bytesEqual(v, want), `client ${c} round ${round} key ${j}: read back what it wrote`);
    }
  }
}

test("50 connections, 10 misbehaving: the 40 well-behaved clients finish with exact data, the server stays bounded and answers", async () => {
  const dir = tempDir("segstore-net-crowd-");
  const store = Store.open(`${dir.path}/store`, { create: true, fs: runtimeFs });
  const big = pseudoRandomBytes(BIG_VALUE_BYTES, 77);
  store.put(FLOOD_KEY, val("flood"));
  store.put(BIG_KEY, big);
  store.commit();
  // The server stops reading the non-reading peer once over OUTPUT_HIGH_WATER_BYTES are unsent; as the kernel
  // takes a little more, several MiB stay queued, so with outputQueueMax at half that mark the peer is dropped
  // at the next invalidation (the default, 64 MiB, would take a long stream of commits to reach).
  const server = await serve(store, {
    listen: "tcp://127.0.0.1:0", token: TOKEN, helloTimeout: HELLO_TIMEOUT_TEST_MS, outputQueueMax: OUTPUT_HIGH_WATER_BYTES / 2,
  });
  const clients: RemoteStore[] = [];
  const peers: RawPeer[] = [];
  const t0 = performance.now();
  try {
    // All 50 connections open at once before anyone misbehaves. Half the clients have no value cache (every
    // read reaches the server); each pair has one of each.
    for (let c = 0; c < CLIENTS; c++) {
      const cached = c % 4 === 1 || c % 4 === 2;
      clients.push(await connect(server.url, { fs: runtimeFs, token: TOKEN, valueCacheBytes: cached ? 1024 * 1024 : 0 }));
    }
    const [idle, badToken, early, badVersion, garbage, truncated, oversized, flooder, nonReader, cut] = await Promise.all(
      Array.from({ length: 10 }, () => RawPeer.open(server.url)),
    );
    peers.push(idle!, badToken!, early!, badVersion!, garbage!, truncated!, oversized!, flooder!, nonReader!, cut!);
    await Promise.all(peers.map((p) => p.hello()));
    assert.is(server.stats().connections, 50, "50 connections open at once");

    const expected = new Map<string, Uint8Array | undefined>();
    const pairs: Pair[] = Array.from({ length: CLIENTS / 2 }, () => ({ aRead: signal(), bCommitted: signal(), aCommitted: signal() }));
    let workMs = 0;
    const work = clients.map((r, c) => worker(r, c, pairs[c >> 1]!, expected).then(() => void (workMs = performance.now() - t0)));

    const misbehave: Promise<void>[] = [
      // Idle: never says hello; closed at the hello timeout with EAUTH.
      (async () => {
        await idle!.waitEnded("the idle peer to be closed", HELLO_TIMEOUT_TEST_MS + 5_000);
        assert.equal(idle!.errorCodes(), ["EAUTH"]);
        assert.ok(idle!.endedAt - idle!.openedAt >= HELLO_TIMEOUT_TEST_MS - 50, `the idle peer had its ${HELLO_TIMEOUT_TEST_MS} ms: ${Math.round(idle!.endedAt - idle!.openedAt)} ms`);
      })(),
      // A proof made with the wrong token: EAUTH after the failure delay, closed.
      (async () => {
        const serverNonce = (await badToken!.hello()).nonce as Uint8Array;
        const nonce = randomNonce();
        const proof = await authProof(tokenBytes("not-the-token-at-all", "test"), "client", serverNonce, nonce);
        await badToken!.sendMessages([[1, "hello", [{ protocol: PROTOCOL_VERSION, nonce, proof }]]]);
        await badToken!.waitEnded("the wrong token's connection to close");
        assert.equal(badToken!.errorCodes(), ["EAUTH"]);
      })(),
      // A call before the hello: EAUTH, and no data served.
      (async () => {
        await early!.sendMessages([[1, "get", [FLOOD_KEY]]]);
        await early!.waitEnded("the early call's connection to close");
        assert.equal(early!.errorCodes(), ["EAUTH"]);
      })(),
      // Another protocol version: EPROTOCOL, closed.
      (async () => {
        await badVersion!.sendMessages([[1, "hello", [{ protocol: PROTOCOL_VERSION + 1, nonce: randomNonce(), proof: null }]]]);
        await badVersion!.waitEnded("the wrong version's connection to close");
        assert.equal(badVersion!.errorCodes(), ["EPROTOCOL"]);
      })(),
      // Garbage after a plausible length: EPROTOCOL, closed.
      (async () => {
        const junk = pseudoRandomBytes(4096, 12345);
        writeFrameHeader(junk, 0, 200);
        junk[4] = 0xc1; // never used in msgpack
        await garbage!.send(junk);
        await garbage!.waitEnded("the garbage connection to close");
        assert.equal(garbage!.errorCodes(), ["EPROTOCOL"]);
      })(),
      // 6 bytes of a 100-byte frame, then silence with the socket open: closed at the hello timeout.
      (async () => {
        await truncated!.send(new Uint8Array([100, 0, 0, 0, 0x93, 1]));
        await truncated!.waitEnded("the truncated frame's connection to close", HELLO_TIMEOUT_TEST_MS + 5_000);
        assert.equal(truncated!.errorCodes(), ["EAUTH"]);
        assert.ok(truncated!.endedAt - truncated!.openedAt >= HELLO_TIMEOUT_TEST_MS - 50, "the truncated frame waited out the hello timeout");
      })(),
      // A length over FRAME_SIZE_MAX: refused from the 4 bytes alone.
      (async () => {
        const header = new Uint8Array(4);
        writeFrameHeader(header, 0, FRAME_SIZE_MAX + 1);
        await oversized!.send(header);
        await oversized!.waitEnded("the oversized frame's connection to close");
        assert.equal(oversized!.errorCodes(), ["EPROTOCOL"]);
      })(),
      // 3 × IN_FLIGHT_MAX calls in one write (a client would hold back past IN_FLIGHT_MAX): gets, pings and
      // uploadAborts (answered asynchronously, so they count in flight). Every one answered once, correctly.
      (async () => {
        await flooder!.authenticate(TOKEN);
        const calls: unknown[] = [];
        const n = 3 * IN_FLIGHT_MAX;
        for (let i = 0; i < n; i++) {
          const msgid = 100 + i;
          calls.push(i % 3 === 0 ? [msgid, "get", [FLOOD_KEY]] : i % 3 === 1 ? [msgid, "ping", []] : [msgid, "uploadAbort", [999_999]]);
        }
        await flooder!.sendMessages(calls);
        const answered = () => flooder!.messages.filter((m) => m[0] >= 100).length;
        await waitFor(() => answered() >= n || flooder!.ended, "the flood's replies");
        assert.not.ok(flooder!.ended, "the flooding client stays connected");
        const replies = new Map<number, Message>();
        for (const m of flooder!.messages.slice(2)) {
          if (m[0] === 0) continue; // invalidations of the crowd's commits
          assert.not.ok(replies.has(m[0]), `call ${m[0]} answered once`);
          replies.set(m[0], m);
        }
        assert.is(replies.size, n, "every call of the flood answered");
        for (let i = 0; i < n; i++) {
          const m = replies.get(100 + i)!;
          assert.is(m[1], null, `call ${100 + i} succeeded`);
          if (i % 3 === 0) assert.is(text((m[2] as [Uint8Array])[0]), "flood");
          else if (i % 3 === 1) assert.is(typeof m[2], "bigint");
          else assert.is(m[2], null);
        }
        flooder!.close();
      })(),
      // Asks for BIG_GETS × 1 MiB and reads none of it.
      (async () => {
        assert.is(((await nonReader!.authenticate(TOKEN))[1]), null, "the non-reader authenticated");
        nonReader!.stopReading();
        await nonReader!.sendMessages(Array.from({ length: BIG_GETS }, (_, i) => [10 + i, "get", [BIG_KEY]]));
      })(),
      // Half of a commit's frame, then the connection goes away: EPROTOCOL on the server, nothing applied.
      (async () => {
        await cut!.authenticate(TOKEN);
        const frame = RawPeer.frame([2, "commit", [[[CUT_KEY, pseudoRandomBytes(100_000, 5), 0n]]]]);
        await cut!.send(frame.subarray(0, frame.length >> 1));
        await new Promise((resolve) => setTimeout(resolve, 20));
        cut!.close();
      })(),
    ];
    await Promise.all([...work, ...misbehave]);
    const crowdMs = performance.now() - t0;

    // The non-reader: the server stopped reading it near the high-water mark, then dropped it at an invalidation.
    const nudge = await connect(server.url, { fs: runtimeFs, token: TOKEN });
    clients.push(nudge);
    for (let i = 0; server.stats().slowPeersDropped === 0 && i < 50; i++) {
      await nudge.put(key(300_100), val(`nudge ${i}`));
      await nudge.commit();
    }
    const stats = server.stats();
    assert.is(stats.slowPeersDropped, 1, "the peer that stopped reading was dropped");
    assert.ok(stats.outputQueuedPeak >= OUTPUT_HIGH_WATER_BYTES, `its output did reach the high-water mark: ${stats.outputQueuedPeak}`);
    assert.ok(
      stats.outputQueuedPeak <= OUTPUT_HIGH_WATER_BYTES + 2 * BIG_VALUE_BYTES,
      `unsent output stayed within the high-water mark and one reply: ${stats.outputQueuedPeak} bytes of the ${BIG_GETS} MiB asked for`,
    );
    // The cut connection counts too when its end reached the server as a FIN (mid-frame: EPROTOCOL), not when
    // closing it with pushes unread made the kernel send a reset.
    assert.ok(stats.protocolErrors >= 2, `protocol errors: garbage, oversized (${stats.protocolErrors})`);
    assert.ok(stats.authFailures >= 3, `auth failures: wrong token, early call, wrong version (${stats.authFailures})`);
    assert.ok(stats.conflicts >= CLIENTS / 2, `one conflict per pair (${stats.conflicts})`);

    // A fresh client: connects, and reads every client's keys exactly; nothing of the cut commit.
    const fresh = await connect(server.url, { fs: runtimeFs, token: TOKEN, valueCacheBytes: 0 });
    clients.push(fresh);
    const ids = [...expected.keys()];
    assert.is(ids.length, CLIENTS * KEYS_PER_CLIENT);
    const values = await fresh.getMany(ids.map(fromHex));
    ids.forEach((h, i) => {
      const want = expected.get(h);
      const v = values[i];
      assert.ok(want === undefined ? v === undefined : v !== undefined && bytesEqual(v, want), `key ${h.slice(0, 16)}: the last committed value`);
    });
    for (let p = 0; p < CLIENTS / 2; p++) assert.is(text(await fresh.get(pairKey(p))), `A${p}`);
    assert.is(await fresh.get(CUT_KEY), undefined, "nothing of the cut commit");
    assert.ok(bytesEqual((await fresh.get(BIG_KEY))!, big));
    await waitFor(() => server.stats().connections === clients.length, "every misbehaving connection to be gone");
    console.log(`  crowd: ${CLIENTS} clients × ${ROUNDS} rounds done in ${Math.round(workMs)} ms, ${peers.length} misbehaving peers done in ${Math.round(crowdMs)} ms; ` +
      `${stats.commits} commits in ${stats.groupCommits} group commits, output peak ${(stats.outputQueuedPeak / 2 ** 20).toFixed(1)} MiB`);
  } finally {
    for (const p of peers) p.close();
    for (const c of clients) await c.close().catch(() => {});
    await server.close();
    store.close();
    dir.cleanup();
  }
});

test("a list bigger than the high-water mark goes out as the connection drains, not queued whole", async () => {
  const dir = tempDir("segstore-net-crowd-");
  const store = Store.open(`${dir.path}/store`, { create: true, fs: runtimeFs });
  // 320,000 ids are 20 listChunk pushes of ~0.5 MiB: about 10.4 MiB, past OUTPUT_HIGH_WATER_BYTES.
  const n = 320_000;
  const id = new Uint8Array(32);
  const view = new DataView(id.buffer);
  for (let i = 0; i < n; i++) {
    view.setUint32(0, i);
    store.put(id, val("x"));
  }
  store.commit();
  const server = await serve(store, { listen: "tcp://127.0.0.1:0", token: TOKEN });
  const r = await connect(server.url, { fs: runtimeFs, token: TOKEN });
  try {
    const ids = await r.list();
    assert.is(ids.length, n);
    assert.is(new Set(ids.map((x) => new DataView(x.buffer, x.byteOffset).getUint32(0))).size, n, "every id, once");
    const peak = server.stats().outputQueuedPeak;
    assert.ok(peak <= OUTPUT_HIGH_WATER_BYTES + 1024 * 1024, `the list was paced: ${peak} bytes queued at the peak, of about ${n * 34} in the list`);
  } finally {
    await r.close();
    await server.close();
    store.close();
    dir.cleanup();
  }
});

test("serve() checks its limits: helloTimeout and outputQueueMax are whole numbers > 0", async () => {
  const dir = tempDir("segstore-net-crowd-");
  const store = Store.open(`${dir.path}/store`, { create: true, fs: runtimeFs });
  try {
    for (const bad of [{ helloTimeout: 0 }, { helloTimeout: 1.5 }, { outputQueueMax: -1 }, { outputQueueMax: Number.NaN }]) {
      await rejects(() => serve(store, { listen: "tcp://127.0.0.1:0", token: TOKEN, ...bad }), (e) => e instanceof RangeError, JSON.stringify(bad));
    }
  } finally {
    store.close();
    dir.cleanup();
  }
});

test.run();
