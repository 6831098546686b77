/**
 * A server under misbehaving peers: bad and missing tokens, calls before
 * the hello, garbage, truncated, oversized and malformed frames, unknown
 * methods, a wrong protocol version. Each gets an error (reply or push)
 * and/or a closed connection, while a well-behaved client working at the
 * same time sees nothing. Also: the token never crosses the wire, a client
 * refuses a server that cannot prove it knows the token, and the unix
 * socket is owner-only.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { encode } from "@msgpack/msgpack";
import { statSync } from "node:fs";
import { runtimeFs } from "../adapters/runtime.ts";
import type { Connection } from "../src/fs.ts";
import { SegstoreError, StateError } from "../src/format.ts";
import { connect, type RemoteStore } from "../src/net/client.ts";
import { createCodec, decodePayload, FRAME_SIZE_MAX, FrameReader, PROTOCOL_VERSION, writeFrameHeader } from "../src/net/protocol.ts";
import { key, rejects, startServer, text, TOKEN, val, waitFor, type ServedStore } from "./_support/net-harness.ts";
import { tempDir } from "./_support/tempdir.ts";

/** A connection speaking bytes, collecting what the server sends back. */
class RawPeer {
  readonly messages: unknown[] = [];
  ended = false;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #codec = createCodec();

  constructor(readonly conn: Connection) {
    this.#writer = conn.writable.getWriter();
    this.#writer.closed.catch(() => {});
    void this.#read();
  }

  static async open(url: string): Promise<RawPeer> {
    return new RawPeer(await runtimeFs.connect!(url));
  }

  async #read(): Promise<void> {
    const reader = this.conn.readable.getReader();
    const frames = new FrameReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        for (const p of frames.push(value)) this.messages.push(decodePayload(this.#codec, p));
      }
    } catch {
      // reset by the server: an end all the same
    }
    this.ended = true;
  }

  async send(bytes: Uint8Array): Promise<void> {
    await this.#writer.write(bytes).catch(() => {});
  }

  async sendMessage(message: unknown): Promise<void> {
    const payload = encode(message, { useBigInt64: true });
    const frame = new Uint8Array(4 + payload.length);
    writeFrameHeader(frame, 0, payload.length);
    frame.set(payload, 4);
    await this.send(frame);
  }

  /** The server's hello push. */
  async hello(): Promise<Record<string, unknown>> {
    await waitFor(() => this.messages.length > 0, "the server's hello");
    const m = this.messages[0] as [number, string, [Record<string, unknown>]];
    assert.is(m[1], "hello");
    return m[2][0];
  }

  /** Errors the server sent: reply errors and error pushes, as [class, message, props]. */
  errors(): [string, string, Record<string, unknown>][] {
    const out: [string, string, Record<string, unknown>][] = [];
    for (const m of this.messages as unknown[][]) {
      if (m[0] === 0 && m[1] === "error") out.push((m[2] as unknown[])[0] as [string, string, Record<string, unknown>]);
      else if (m[0] !== 0 && m[1] !== null) out.push(m[1] as [string, string, Record<string, unknown>]);
    }
    return out;
  }

  close(): void {
    this.conn.close();
  }
}

/** A well-behaved client doing reads and commits in a loop until stopped; counts what it did. */
function bystander(r: RemoteStore): { stop(): Promise<number> } {
  let running = true;
  let rounds = 0;
  const work = (async () => {
    while (running) {
      await r.put(key(1000 + (rounds % 10)), val(`round ${rounds}`));
      await r.commit();
      const v = await r.get(key(1000 + (rounds % 10)));
      assert.is(text(v), `round ${rounds}`);
      rounds++;
    }
  })();
  return {
    async stop() {
      running = false;
      await work;
      return rounds;
    },
  };
}

/** Runs `attack` against a served store while a bystander works; the bystander must make progress and see no error. */
async function withBystander(h: ServedStore, attack: () => Promise<void>): Promise<void> {
  const good = await h.connect();
  const b = bystander(good);
  try {
    await attack();
  } finally {
    const rounds = await b.stop();
    assert.ok(rounds > 0, "the well-behaved client kept working");
  }
  assert.is(h.server.stats().connections >= 1, true);
  // And it still works afterwards.
  await good.put(key(1), val("after"));
  await good.commit();
  assert.is(text(await good.get(key(1))), "after");
}

const isCode = (code: string) => (e: unknown) => e instanceof SegstoreError && e.code === code;

test("a wrong token, no token, or a short one: EAUTH; the server keeps serving others", async () => {
  const h = await startServer({ transport: "tcp" });
  try {
    await withBystander(h, async () => {
      await rejects(() => connect(h.url, { fs: runtimeFs, token: "wrong-token-but-long" }), isCode("EAUTH"), "wrong token");
      await rejects(() => connect(h.url, { fs: runtimeFs }), isCode("EAUTH"), "no token");
      await rejects(() => connect(h.url, { fs: runtimeFs, token: "short" }), (e) => e instanceof RangeError, "short token");
    });
    assert.is(h.server.stats().authFailures, 1, "the no-token client never sent a hello; the wrong one did");
  } finally {
    await h.close();
  }
});

test("a raw peer with a forged proof, or a call before the hello: error and closed", async () => {
  const h = await startServer({ transport: "tcp" });
  try {
    await withBystander(h, async () => {
      const p = await RawPeer.open(h.url);
      await p.hello();
      await p.sendMessage([1, "hello", [{ protocol: PROTOCOL_VERSION, nonce: new Uint8Array(32), proof: new Uint8Array(32) }]]);
      await waitFor(() => p.ended, "the forged hello's connection to close");
      assert.equal(p.errors().map((e) => e[2].code), ["EAUTH"]);

      const q = await RawPeer.open(h.url);
      await q.hello();
      await q.sendMessage([1, "get", [key(1)]]);
      await waitFor(() => q.ended, "the early call's connection to close");
      assert.equal(q.errors().map((e) => e[2].code), ["EAUTH"]);
      assert.ok(!q.messages.some((m) => Array.isArray(m) && m[0] === 1 && m[1] === null), "no data was served");
    });
  } finally {
    await h.close();
  }
});

test("garbage, truncated, oversized and malformed frames: an error and a closed connection each", async () => {
  const h = await startServer({ transport: "tcp" });
  try {
    await withBystander(h, async () => {
      // Random bytes.
      const g = await RawPeer.open(h.url);
      await g.hello();
      const junk = new Uint8Array(4096);
      for (let i = 0; i < junk.length; i++) junk[i] = (i * 2654435761) >>> 24;
      await g.send(junk);
      await waitFor(() => g.ended, "the garbage connection to close");

      // A length over the limit: refused from the 4 bytes alone.
      const o = await RawPeer.open(h.url);
      await o.hello();
      const big = new Uint8Array(4);
      writeFrameHeader(big, 0, FRAME_SIZE_MAX + 1);
      await o.send(big);
      await waitFor(() => o.ended, "the oversized connection to close");
      assert.equal(o.errors().map((e) => e[2].code), ["EPROTOCOL"]);

      // A valid length, then bytes that are not msgpack.
      const m = await RawPeer.open(h.url);
      await m.hello();
      await m.send(new Uint8Array([3, 0, 0, 0, 0xc1, 0xc1, 0xc1]));
      await waitFor(() => m.ended, "the malformed connection to close");
      assert.equal(m.errors().map((e) => e[2].code), ["EPROTOCOL"]);

      // Msgpack of the wrong shape.
      const s = await RawPeer.open(h.url);
      await s.hello();
      await s.sendMessage({ not: "an array" });
      await waitFor(() => s.ended, "the wrong-shape connection to close");
      assert.equal(s.errors().map((e) => e[2].code), ["EPROTOCOL"]);

      // Half a frame, then the peer goes away.
      const t = await RawPeer.open(h.url);
      await t.hello();
      await t.send(new Uint8Array([100, 0, 0, 0, 0x93, 1]));
      t.close();
      await waitFor(() => h.server.stats().connections === 1, "the server to drop every bad connection");
    });
    assert.ok(h.server.stats().protocolErrors >= 4, `protocol errors counted: ${h.server.stats().protocolErrors}`);
  } finally {
    await h.close();
  }
});

test("an unknown method, or bad arguments: an error reply, and the connection stays usable", async () => {
  const h = await startServer({ transport: "unix" });
  try {
    await withBystander(h, async () => {
      const p = await RawPeer.open(h.url);
      const hello = await p.hello();
      assert.is(hello.auth, "none");
      await p.sendMessage([1, "hello", [{ protocol: PROTOCOL_VERSION, nonce: new Uint8Array(32), proof: null }]]);
      await p.sendMessage([2, "dropDatabase", []]);
      await p.sendMessage([3, "get", ["not an id"]]);
      await p.sendMessage([4, "__proto__", []]);
      await p.sendMessage([5, "ping", []]);
      await waitFor(() => p.messages.length >= 6, "five replies");
      const replies = new Map((p.messages.slice(1) as unknown[][]).map((m) => [m[0], m]));
      assert.is((replies.get(2)![1] as unknown[])[2] !== undefined, true);
      assert.is(((replies.get(2)![1] as unknown[])[2] as Record<string, unknown>).code, "EPROTOCOL");
      assert.is((replies.get(3)![1] as unknown[])[0], "TypeError");
      assert.is(((replies.get(4)![1] as unknown[])[2] as Record<string, unknown>).code, "EPROTOCOL");
      assert.is(replies.get(5)![1], null, "ping answered: the connection survived");
      assert.not.ok(p.ended);
      p.close();
    });
  } finally {
    await h.close();
  }
});

test("a client of another protocol version is refused with EPROTOCOL", async () => {
  const h = await startServer({ transport: "unix" });
  try {
    const p = await RawPeer.open(h.url);
    await p.hello();
    await p.sendMessage([1, "hello", [{ protocol: PROTOCOL_VERSION + 1, nonce: new Uint8Array(32), proof: null }]]);
    await waitFor(() => p.ended, "the connection to close");
    assert.equal(p.errors().map((e) => e[2].code), ["EPROTOCOL"]);
  } finally {
    await h.close();
  }
});

test("the token never crosses the wire, and a client refuses a server that cannot prove it knows it", async () => {
  const dir = tempDir("segstore-net-fake-");
  const seen: Uint8Array[] = [];
  const codec = createCodec();
  // A fake server: sends a hello asking for HMAC, records what the client sends, replies with a bogus proof.
  const listener = await runtimeFs.listen!("tcp://127.0.0.1:0", (conn) => {
    const writer = conn.writable.getWriter();
    const sendMsg = (m: unknown) => {
      const payload = codec.encoder.encode(m);
      const frame = new Uint8Array(4 + payload.length);
      writeFrameHeader(frame, 0, payload.length);
      frame.set(payload, 4);
      writer.write(frame).catch(() => {});
    };
    sendMsg([0, "hello", [{ protocol: PROTOCOL_VERSION, server: "segstore", auth: "hmac-sha256", nonce: new Uint8Array(32).fill(3) }]]);
    void (async () => {
      const reader = conn.readable.getReader();
      const frames = new FrameReader();
      for (;;) {
        const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }));
        if (done || value === undefined) break;
        seen.push(value.slice());
        for (const p of frames.push(value)) {
          const m = decodePayload(codec, p) as [number, string, unknown[]];
          if (m[1] === "hello") {
            sendMsg([m[0], null, { protocol: PROTOCOL_VERSION, proof: new Uint8Array(32).fill(9), storeId: "x", storePath: "/x", blobDir: "/x/blobs", lastTxid: 0n, readOnly: false }]);
          }
        }
      }
    })();
  });
  try {
    await rejects(() => connect(listener.url, { fs: runtimeFs, token: TOKEN }), (e) => e instanceof SegstoreError && e.code === "EAUTH" && /could not prove/.test(e.message), "connect to an impostor");
    const sent = new TextDecoder("latin1").decode(new Uint8Array(seen.flatMap((b) => [...b])));
    assert.ok(sent.length > 32, "the client did send its hello");
    assert.not.ok(sent.includes(TOKEN), "the token is not in what the client sent");
  } finally {
    await listener.close();
    dir.cleanup();
  }
});

test("the unix socket is created owner-only (0600)", async () => {
  const h = await startServer({ transport: "unix" });
  try {
    const path = h.url.slice("unix:".length);
    assert.is(statSync(path).mode & 0o777, 0o600);
  } finally {
    await h.close();
  }
});

test("serve() refuses a TCP address without a token, a store already served, and unknown options", async () => {
  const h = await startServer({ transport: "unix" });
  try {
    const { serve } = await import("../src/net/server.ts");
    await rejects(() => serve(h.store, { listen: "tcp://127.0.0.1:0" }), (e) => e instanceof TypeError && /token/.test(e.message));
    await rejects(() => serve(h.store, { listen: "unix:/tmp/segstore-second.sock" }), (e) => e instanceof StateError && e.code === "EBUSY", "a second server on one store");
    await rejects(() => serve(h.store, { listen: "unix:/tmp/x.sock", tokn: "x" } as never), (e) => e instanceof TypeError && /tokn/.test(e.message));
    await rejects(() => connect(h.url, { fs: runtimeFs, cachedir: "/tmp" } as never), (e) => e instanceof TypeError && /cacheDir/.test(e.message));
  } finally {
    await h.close();
  }
});

test.run();
