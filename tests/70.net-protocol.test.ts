/**
 * The wire protocol without sockets: frame splitting at every boundary,
 * length limits checked before allocation, msgpack decode limits, the
 * hand-built chunk frame, errors rebuilt as the same class, and a fuzz with
 * a contract (arbitrary bytes give protocol errors only, and the reader and
 * codec still work afterwards). Also the ChunkQueue hand-off and the
 * serial table the vote relies on.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { encode } from "@msgpack/msgpack";
import {
  ConflictError, IntegrityError, LockedError, NotFoundError, SegstoreError, StateError, StorageError, StoreFormatError,
} from "../src/format.ts";
import { FsError } from "../src/fs.ts";
import { ChunkQueue } from "../src/net/chunkqueue.ts";
import {
  chunkHeaderSize, createCodec, decodePayload, errorFromWire, errorToWire, FRAME_SIZE_MAX, FrameReader, keyBytes,
  keyString, parseCall, UPLOAD_NAME_PATTERN, uploadName, writeChunkHeader, writeFrameHeader,
} from "../src/net/protocol.ts";
import { SerialTable } from "../src/net/serials.ts";
import { Channel } from "../src/net/channel.ts";
import type { Connection } from "../src/fs.ts";
import { bytesEqual } from "./_support/net-harness.ts";

function frame(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + payload.length);
  writeFrameHeader(out, 0, payload.length);
  out.set(payload, 4);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function isCode(code: string) {
  return (e: unknown) => e instanceof SegstoreError && e.code === code;
}

test("FrameReader returns the same frames whatever the chunk boundaries", () => {
  const codec = createCodec();
  const messages = [[1, "get", [new Uint8Array(32).fill(7)]], [2, "list", []], [0, "uploadChunk", [3, new Uint8Array(5000).fill(9)]], [3, "vote", []]];
  const stream = concat(messages.map((m) => frame(encode(m, { useBigInt64: true }))));
  for (let cut1 = 0; cut1 <= stream.length; cut1 += 7) {
    for (const cut2 of [cut1, Math.min(stream.length, cut1 + 1), Math.min(stream.length, cut1 + 3), stream.length]) {
      const reader = new FrameReader();
      const got = [
        ...reader.push(stream.subarray(0, cut1)),
        ...reader.push(stream.subarray(cut1, cut2)),
        ...reader.push(stream.subarray(cut2)),
      ].map((p) => decodePayload(codec, p));
      assert.equal(got, messages, `cuts at ${cut1}, ${cut2}`);
      assert.ok(reader.idle);
    }
  }
});

test("FrameReader reuses the buffers of frames given back (several), and never gives one buffer to two live frames", () => {
  // Frames of 3000 bytes, each split across two chunks so that it is assembled in a buffer of the reader's.
  const payload = (k: number) => new Uint8Array(3000).fill(k);
  const reader = new FrameReader();
  const next = (k: number): Uint8Array => {
    const f = frame(payload(k));
    const got = [...reader.push(f.subarray(0, 100)), ...reader.push(f.subarray(100))];
    assert.is(got.length, 1);
    assert.ok(bytesEqual(got[0]!, payload(k)), `frame ${k}`);
    return got[0]!;
  };
  // Three frames live at once (one written, one read, one early), then given back together.
  const a = next(1), b = next(2), c = next(3);
  assert.ok(a.buffer !== b.buffer && b.buffer !== c.buffer && a.buffer !== c.buffer);
  reader.recycle(a);
  reader.recycle(b);
  reader.recycle(b); // twice: kept once
  reader.recycle(c);
  const d = next(4), e = next(5), f = next(6);
  const reused = new Set([a.buffer, b.buffer, c.buffer]);
  assert.ok(reused.has(d.buffer) && reused.has(e.buffer) && reused.has(f.buffer), "all three buffers came back into use");
  assert.ok(d.buffer !== e.buffer && e.buffer !== f.buffer && d.buffer !== f.buffer, "each to one frame");
  const g = next(7);
  assert.ok(!reused.has(g.buffer), "with none given back, a new buffer");
  assert.ok(bytesEqual(d, payload(4)) && bytesEqual(e, payload(5)) && bytesEqual(f, payload(6)), "live frames keep their bytes");
});

test("FrameReader byte by byte, and idle only between frames", () => {
  const codec = createCodec();
  const stream = frame(encode([9, "has", [new Uint8Array(32)]]));
  const reader = new FrameReader();
  const got: unknown[] = [];
  for (let i = 0; i < stream.length; i++) {
    for (const p of reader.push(stream.subarray(i, i + 1))) got.push(decodePayload(codec, p));
    if (i < stream.length - 1) assert.not.ok(reader.idle, `not idle after ${i + 1} bytes`);
  }
  assert.equal(got, [[9, "has", [new Uint8Array(32)]]]);
  assert.ok(reader.idle);
});

test("FrameReader refuses a zero or oversized length before buffering any payload", () => {
  const over = new Uint8Array(4);
  writeFrameHeader(over, 0, FRAME_SIZE_MAX + 1);
  assert.throws(() => new FrameReader().push(over), isCode("EPROTOCOL"));
  assert.throws(() => new FrameReader().push(new Uint8Array(4)), isCode("EPROTOCOL"));
  const huge = new Uint8Array([0xff, 0xff, 0xff, 0xff]);
  assert.throws(() => new FrameReader().push(huge), (e: unknown) => e instanceof SegstoreError && /over the limit/.test(e.message));
  // Exactly the limit is accepted (it waits for the payload).
  const limit = new Uint8Array(4);
  writeFrameHeader(limit, 0, FRAME_SIZE_MAX);
  const r = new FrameReader();
  assert.equal(r.push(limit), []);
  assert.not.ok(r.idle);
});

test("decode limits come from the frame limit: a bin claiming more than the frame is refused", () => {
  const codec = createCodec(1024);
  // bin32 header claiming 2000 bytes inside a 10-byte payload.
  const claim = new Uint8Array([0x93, 0x01, 0xa3, 0x67, 0x65, 0x74, 0x91, 0xc6, 0x00, 0x00, 0x07, 0xd0]);
  assert.throws(() => decodePayload(codec, claim), isCode("EPROTOCOL"));
  // An array header claiming 2^32-1 elements.
  assert.throws(() => decodePayload(codec, new Uint8Array([0xdd, 0xff, 0xff, 0xff, 0xff])), isCode("EPROTOCOL"));
  // Trailing bytes after the message.
  assert.throws(() => decodePayload(codec, new Uint8Array([0x90, 0x90])), isCode("EPROTOCOL"));
  // The codec still works afterwards.
  assert.equal(decodePayload(codec, encode([1, "x", []])), [1, "x", []]);
});

test("64-bit serials travel as uint64 and come back as bigint", () => {
  const codec = createCodec();
  const bytes = codec.encoder.encode([1, null, [5n, 2n ** 63n]]);
  assert.equal(decodePayload(codec, bytes), [1, null, [5n, 2n ** 63n]]);
});

test("a hand-built chunk frame decodes as [0, name, [id, bytes]]", () => {
  const codec = createCodec();
  for (const n of [0, 1, 100, 70000]) {
    const at = chunkHeaderSize("blobChunk");
    const buf = new Uint8Array(at + n);
    for (let i = 0; i < n; i++) buf[at + i] = i & 0xff;
    assert.is(writeChunkHeader(buf, "blobChunk", 4242, n), at);
    const frames = new FrameReader().push(buf);
    assert.is(frames.length, 1);
    const m = decodePayload(codec, frames[0]!) as [number, string, [number, Uint8Array]];
    assert.is(m[0], 0);
    assert.is(m[1], "blobChunk");
    assert.is(m[2][0], 4242);
    assert.is(m[2][1].length, n);
    assert.equal(m[2][1], buf.subarray(at));
  }
});

test("parseCall accepts [msgid, method, args] only", () => {
  assert.equal(parseCall([1, "get", []]), { msgid: 1, method: "get", args: [] });
  for (const bad of [null, 1, "x", [], [1, "get"], [-1, "get", []], [1.5, "get", []], [1, 2, []], [1, "", []], [1, "get", {}], [1, "x".repeat(40), []], [2 ** 32, "get", []]]) {
    assert.throws(() => parseCall(bad), isCode("EPROTOCOL"), JSON.stringify(bad));
  }
});

test("every error class survives the wire with its class, message and facts", () => {
  const codec = createCodec();
  const errors: Error[] = [
    new IntegrityError("bad crc", { segment: 3, offset: 99, file: "/s/data/0/3" }),
    new LockedError("locked", "pid 7 on host"),
    new NotFoundError("no such blob"),
    new ConflictError("conflict", ["ab", "cd"]),
    new StoreFormatError("version 9"),
    new StateError("EREADONLY", "read only"),
    new StorageError("ENOSPC", "disk full"),
    new SegstoreError("EAUTH", "wrong token"),
    new FsError("ENOENT", "open", "/x", "no file"),
    new TypeError("bad id"),
    new RangeError("too big"),
  ];
  for (const e of errors) {
    const wire = decodePayload(codec, codec.encoder.encode(errorToWire(e)));
    const back = errorFromWire(wire);
    assert.is(back.constructor, e.constructor, e.constructor.name);
    assert.is(back.message, e.message);
    if (e instanceof SegstoreError) assert.is((back as SegstoreError).code, e.code);
  }
  const c = errorFromWire(errorToWire(new ConflictError("x", ["k1"]))) as ConflictError;
  assert.equal(c.keys, ["k1"]);
  const i = errorFromWire(errorToWire(new IntegrityError("x", { segment: 3, offset: 99 }))) as IntegrityError;
  assert.is(i.segment, 3);
  assert.is(i.offset, 99);
  assert.is((errorFromWire(errorToWire(new LockedError("x", "pid 7"))) as LockedError).holder, "pid 7");
  assert.is((errorFromWire(errorToWire(new StorageError("ENOSPC", "x"))) as StorageError).osCode, "ENOSPC");
  // An internal error keeps its message but not its class; garbage becomes a protocol error.
  assert.is(errorFromWire(errorToWire(new Error("boom"))).constructor, SegstoreError);
  assert.ok(errorFromWire(42) instanceof SegstoreError);
  assert.ok(errorFromWire(["NoSuchClass", "m", { code: "EWHAT" }]) instanceof SegstoreError);
});

test("fuzz: random bytes give protocol errors only, and the reader and codec work afterwards", () => {
  let seed = 12345;
  const rnd = () => {
    seed ^= seed << 13; seed >>>= 0;
    seed ^= seed >>> 17;
    seed ^= seed << 5; seed >>>= 0;
    return seed;
  };
  const codec = createCodec(4096);
  const good = frame(encode([1, "get", [new Uint8Array(32)]]));
  for (let round = 0; round < 3000; round++) {
    const n = 1 + (rnd() % 64);
    const junk = new Uint8Array(n);
    for (let i = 0; i < n; i++) junk[i] = rnd() & 0xff;
    // A plausible length prefix half the time, so the payload reaches the decoder.
    if (round % 2 === 0 && n > 4) writeFrameHeader(junk, 0, n - 4);
    const reader = new FrameReader(4096);
    try {
      for (const p of reader.push(junk)) {
        try {
          parseCall(decodePayload(codec, p));
        } catch (e) {
          assert.ok(e instanceof SegstoreError && e.code === "EPROTOCOL", `decode: ${(e as Error).message}`);
        }
      }
    } catch (e) {
      assert.ok(e instanceof SegstoreError && e.code === "EPROTOCOL", `frame: ${(e as Error).message}`);
    }
    // The codec is not left in a bad state.
    const again = new FrameReader(4096).push(good);
    assert.equal(parseCall(decodePayload(codec, again[0]!)).method, "get");
  }
});

test("keyString and keyBytes round-trip every byte value", () => {
  const id = new Uint8Array(32);
  for (let b = 0; b < 256; b += 32) {
    for (let i = 0; i < 32; i++) id[i] = b + i;
    const k = keyString(id);
    assert.is(k.length, 32);
    assert.equal(keyBytes(k), id);
  }
});

test("upload names match the pattern the server accepts; paths and dot-dots do not", () => {
  for (let i = 0; i < 20; i++) assert.ok(UPLOAD_NAME_PATTERN.test(uploadName()));
  for (const bad of ["../upload-00000000000000000000000000000000.tmp", "upload-00000000000000000000000000000000.tmp/x",
    "a/upload-00000000000000000000000000000000.tmp", "upload-0000.tmp", "..", "upload-0000000000000000000000000000000g.tmp",
    "/etc/passwd", "upload-00000000000000000000000000000000.tmp\n"]) {
    assert.not.ok(UPLOAD_NAME_PATTERN.test(bad), bad);
  }
});

test("ChunkQueue: push resolves once the consumer took the chunk, release once it came back for more; end and fail reach it", async () => {
  const q = new ChunkQueue();
  const got: number[] = [];
  const events: string[] = [];
  let working: number | undefined;
  const consumer = (async () => {
    for await (const c of q) {
      working = c[0]!;
      got.push(working);
      await new Promise((r) => setTimeout(r, 5));
      events.push(`done ${working}`);
      working = undefined;
    }
  })();
  for (let i = 1; i <= 3; i++) {
    await q.push(new Uint8Array([i]), () => events.push(`released ${i} while working on ${working ?? "nothing"}`));
    events.push(`pushed ${i}`);
  }
  q.end();
  await consumer;
  assert.equal(got, [1, 2, 3]);
  // Push i resolves when chunk i is taken (the producer then reads on while the consumer works);
  // chunk i is released only once the consumer is done with it and comes back for i + 1 (or the end).
  assert.equal(events, [
    "pushed 1", "done 1",
    "released 1 while working on nothing", "pushed 2", "done 2",
    "released 2 while working on nothing", "pushed 3", "done 3",
    "released 3 while working on nothing",
  ]);
  // A push while the consumer works on the last one is held: one chunk queued at most.
  const q3 = new ChunkQueue();
  let pushed2 = false;
  const slow = (async () => {
    for await (const _ of q3) await new Promise((r) => setTimeout(r, 20));
  })();
  await q3.push(new Uint8Array([1]));
  const second = q3.push(new Uint8Array([2])).then(() => (pushed2 = true));
  await new Promise((r) => setTimeout(r, 5));
  assert.is(pushed2, false, "the second push waits while the first chunk is being worked on");
  assert.throws(() => q3.push(new Uint8Array([3])), /before the last push resolved/);
  await second;
  q3.end();
  await slow;

  const q2 = new ChunkQueue();
  const failing = (async () => {
    for await (const _ of q2) { /* take */ }
  })();
  await q2.push(new Uint8Array([1]));
  q2.fail(new Error("gone"));
  await q2.push(new Uint8Array([2])); // a failed queue takes and drops pushes at once
  try {
    await failing;
    assert.unreachable("the consumer sees the failure");
  } catch (e) {
    assert.is((e as Error).message, "gone");
  }
});

test("SerialTable: the floor, commits, conflicts, reservations, and the reset that only adds conflicts", () => {
  const t = new SerialTable(10n, 3);
  assert.is(t.serial("a"), 10n);
  assert.equal(t.conflicts([["a", 10n]]), []);
  t.committed(["a"], 11n);
  assert.is(t.serial("a"), 11n);
  assert.equal(t.conflicts([["a", 10n], ["b", 10n]]), ["a"]);
  t.reserve(["b"]);
  assert.equal(t.conflicts([["b", 10n]]), ["b"]);
  t.release(["b"]);
  assert.equal(t.conflicts([["b", 10n]]), []);
  t.committed(["c", "d", "e"], 12n);
  // Over the bound: the floor rises to the newest txid; a read at the old floor now conflicts (safe), one at 12 does not.
  assert.is(t.size, 0);
  assert.is(t.floor, 12n);
  assert.equal(t.conflicts([["b", 10n]]), ["b"]);
  assert.equal(t.conflicts([["b", 12n], ["a", 12n]]), []);
});

/** A Connection whose readable yields `chunks` one per read, then ends; `recycle` sees what the channel gives back. */
function chunksConnection(chunks: Uint8Array[], recycle?: (chunk: Uint8Array) => void): Connection {
  let next = 0;
  return {
    remote: "test",
    readable: new ReadableStream<Uint8Array>({
      pull(c) {
        if (next < chunks.length) c.enqueue(chunks[next++]!);
        else c.close();
      },
    }),
    writable: new WritableStream<Uint8Array>(),
    close() {},
    ...(recycle === undefined ? {} : { recycle }),
  };
}

/**
 * A Connection that pushes `chunks` through subscribe() (as the Node adapter does), all at once and then its end,
 * ignoring the reader's wish to pause: the channel must hold what comes while a handler has paused it.
 */
function pushingConnection(chunks: Uint8Array[], log: string[]): Connection {
  return {
    remote: "test",
    get readable(): ReadableStream<Uint8Array> {
      throw new Error("a channel over a pushing connection reads no stream");
    },
    subscribe(reader) {
      queueMicrotask(() => {
        for (const chunk of chunks) if (!reader.onChunk(chunk)) log.push("pause");
        reader.onEnd();
      });
      return { resume: () => void log.push("resume") };
    },
    writable: new WritableStream<Uint8Array>(),
    close() {},
  };
}

test("Channel over pushed reads: the same messages in order, a handler's pause holds what comes meanwhile, the end comes last", async () => {
  const small = (n: number) => frame(encode([0, "ping", [n]]));
  const big = frame(encode([0, "ping", [100]]));
  // Two frames in one chunk, a frame split across two chunks, then one more.
  const chunks = [concat([small(1), small(2)]), big.subarray(0, 5), big.subarray(5), small(3)];
  const log: string[] = [];
  const seen: number[] = [];
  let done!: () => void;
  const ended = new Promise<void>((resolve) => (done = resolve));
  const channel: Channel = new Channel(pushingConnection(chunks, log), {
    onMessage(message) {
      const n = (message as [number, string, number[]])[2][0]!;
      seen.push(n);
      channel.consumed();
      // Message 1 pauses reading for a while: messages 2, 100 and 3 must wait for it, in order.
      if (n === 1) return new Promise<void>((resolve) => setTimeout(resolve, 20));
    },
    onReadEnd: () => {
      log.push("end");
      done();
    },
    onClose: () => done(),
  });
  channel.start();
  await ended;
  assert.equal(seen, [1, 2, 100, 3]);
  assert.is(log[log.length - 1], "end", `the end after every message (${log.join(", ")})`);
  assert.ok(log.includes("pause"), "the reader was told to pause");
  channel.close();
});

test("Channel over pushed reads: a bad frame is answered as a protocol error and nothing after it is handed on", async () => {
  const good = frame(encode([0, "ping", [1]]));
  const bad = new Uint8Array([2, 0, 0, 0, 0xc1, 0xc1]); // a 2-byte frame of a msgpack byte that is never valid
  const after = frame(encode([0, "ping", [2]]));
  const seen: number[] = [];
  const errors: string[] = [];
  let done!: () => void;
  const closed = new Promise<void>((resolve) => (done = resolve));
  const channel: Channel = new Channel(pushingConnection([concat([good, bad, after])], []), {
    onMessage(message) {
      seen.push((message as [number, string, number[]])[2][0]!);
      channel.consumed();
    },
    onReadError: (e) => void errors.push((e as { code?: string }).code ?? "?"),
    onClose: () => done(),
  });
  channel.start();
  await closed;
  assert.equal(seen, [1], "the message before the bad frame, none after it");
  assert.equal(errors, ["EPROTOCOL"]);
});

test("Channel gives a read chunk back to the adapter (recycle) only when no message kept a view into it", async () => {
  // Chunk 1: two small frames, the first consumed, the second kept (a view into the chunk).
  // Chunk 2: one small frame, consumed. Chunk 3 and 4: a frame split across them (assembled in a buffer of its own).
  const small = (n: number) => frame(encode([0, "ping", [n]]));
  const big = frame(encode([0, "ping", [new Uint8Array(100)]]));
  const chunks = [concat([small(1), small(2)]), small(3), big.subarray(0, 50), big.subarray(50)];
  const recycled: Uint8Array[] = [];
  const conn = chunksConnection(chunks, (chunk) => void recycled.push(chunk));
  const seen: number[] = [];
  let done!: () => void;
  const ended = new Promise<void>((resolve) => (done = resolve));
  const channel: Channel = new Channel(conn, {
    onMessage(message) {
      const arg = (message as [number, string, unknown[]])[2][0];
      seen.push(typeof arg === "number" ? arg : -1);
      if (arg !== 2) channel.consumed(); // message 2 is kept
    },
    onReadEnd: () => done(),
    onClose: () => done(),
  });
  channel.start();
  await ended;
  assert.equal(seen, [1, 2, 3, -1]);
  assert.equal(recycled, [chunks[1], chunks[2], chunks[3]], "chunk 1 (a kept view) is not given back; the others are");
  channel.close();
});

test("Channel.consumedLater: a kept frame's buffer is not reused until released, then it is", async () => {
  // Three frames, each split across two chunks, so each is assembled in a buffer of the channel's own.
  const big = (n: number) => frame(encode([0, "ping", [new Uint8Array(100).fill(n)]]));
  const chunks = [1, 2, 3].flatMap((n) => [big(n).subarray(0, 40), big(n).subarray(40)]);
  const conn = chunksConnection(chunks);
  let kept: Uint8Array | undefined;
  let release1: (() => void) | undefined;
  const checks: string[] = [];
  let done!: () => void;
  const ended = new Promise<void>((resolve) => (done = resolve));
  const channel: Channel = new Channel(conn, {
    onMessage(message) {
      const data = (message as [number, string, [Uint8Array]])[2][0];
      if (data[0] === 1) {
        kept = data;
        release1 = channel.consumedLater(); // still in use after this returns, as a chunk being written is
      } else if (data[0] === 2) {
        checks.push(`2 in another buffer: ${data.buffer !== kept!.buffer}`, `1 intact: ${kept!.every((b) => b === 1)}`);
        release1!();
        channel.consumed();
      } else {
        checks.push(`3 reuses 1's buffer: ${data.buffer === kept!.buffer}`);
        channel.consumed();
      }
    },
    onReadEnd: () => done(),
    onClose: () => done(),
  });
  channel.start();
  await ended;
  assert.equal(checks, ["2 in another buffer: true", "1 intact: true", "3 reuses 1's buffer: true"]);
  channel.close();
});

test.run();
