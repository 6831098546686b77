// CRC-32 of the wasm core (src/wasm.ts crc32 / WasmCore.crc32At) against
// node:zlib's crc32 (Node 20.15+, Deno) and a plain JS table implementation:
// known vectors, every length 0..4096 at random alignments, a 64 MiB buffer
// in wasm memory, resumption across chunk boundaries, the copy path of
// crc32() and core.crc32Of() across the scratch window, and the errors
// callers can cause.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import * as zlib from "node:zlib";
import { crc32, WasmCore } from "../src/wasm.ts";

const test = suite("crc32");
const enc = new TextEncoder();

/** Bitwise-table CRC-32 (zlib polynomial), the reference when zlib.crc32 is missing and a second opinion when not. */
const JS_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crcJs(bytes: Uint8Array, seed = 0): number {
  let c = ~seed >>> 0;
  for (let i = 0; i < bytes.length; i++) c = JS_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}
const zlibCrc = (zlib as unknown as { crc32?: (b: Uint8Array, seed?: number) => number }).crc32;
/** The reference: node:zlib when the runtime has it, else the JS table. */
const reference: (bytes: Uint8Array, seed?: number) => number = zlibCrc ? (b, s = 0) => zlibCrc(b, s) >>> 0 : crcJs;

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
function fillRandom(bytes: Uint8Array, seed: number): void {
  const next = rng(seed);
  const words = Math.floor(bytes.length / 4);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < words; i++) dv.setUint32(i * 4, next(), true);
  for (let i = words * 4; i < bytes.length; i++) bytes[i] = next() & 0xff;
}

const core = WasmCore.create();

test("crc32() gives the known check values", () => {
  assert.is(crc32(enc.encode("123456789")), 0xcbf43926);
  assert.is(crc32(new Uint8Array(0)), 0);
  assert.is(crc32(enc.encode("a")), 0xe8b7be43);
  assert.is(crc32(enc.encode("The quick brown fox jumps over the lazy dog")), 0x414fa339);
  assert.is(crc32(new Uint8Array(32)), 0x190a55ad);
  assert.is(crc32(new Uint8Array(32).fill(0xff)), 0xff6cab0b);
  // The JS reference agrees, so it is a sound fallback.
  assert.is(crcJs(enc.encode("123456789")), 0xcbf43926);
});

test("crc32At() equals zlib for every length 0..4096 at random alignments", () => {
  const base = core.writeBufPtr;
  const window = core.u8.subarray(base, base + 4096 + 64);
  fillRandom(window, 7);
  const next = rng(99);
  for (let len = 0; len <= 4096; len++) {
    const align = next() % 64;
    const ptr = base + align;
    const seed = len % 3 === 0 ? 0 : next();
    const want = reference(core.u8.subarray(ptr, ptr + len), seed);
    const got = core.crc32At(ptr, len, seed);
    if (got !== want) assert.unreachable(`length ${len} at alignment ${align}, seed ${seed}: ${got} != ${want}`);
    if (len % 257 === 0) assert.is(crcJs(core.u8.subarray(ptr, ptr + len), seed), want, `JS table at length ${len}`);
  }
});

test("crc32() of bytes outside wasm equals zlib for every length 0..4096 at random offsets", () => {
  const bytes = new Uint8Array(4096 + 64);
  fillRandom(bytes, 11);
  const next = rng(5);
  for (let len = 0; len <= 4096; len++) {
    const at = next() % 64;
    const view = bytes.subarray(at, at + len);
    const got = crc32(view);
    const want = reference(view);
    if (got !== want) assert.unreachable(`length ${len} at offset ${at}: ${got} != ${want}`);
  }
});

test("crc32At() over 64 MiB in wasm memory equals zlib, whole and resumed across chunk boundaries", () => {
  const size = 64 * 1024 * 1024;
  const big = WasmCore.create();
  const ptr = big.borrowTableRegion(size);
  const view = big.u8.subarray(ptr, ptr + size);
  fillRandom(view, 2024);
  const whole = big.crc32At(ptr, size);
  assert.is(whole, reference(view));
  // Resumed in pieces of random lengths (odd ones included, so pieces
  // straddle the 16- and 32-byte steps), chaining the seed.
  const next = rng(3);
  let crc = 0;
  let pieces = 0;
  for (let at = 0; at < size; pieces++) {
    const len = Math.min(size - at, (next() % (3 * 1024 * 1024)) + 1);
    crc = big.crc32At(ptr + at, len, crc);
    at += len;
  }
  assert.ok(pieces > 20, "the buffer was checksummed in many pieces");
  assert.is(crc, whole);
  // crc32() of a view over a core's memory is computed in place, same value.
  assert.is(crc32(view), whole);
  assert.is(crc32(view.subarray(12345, 12345 + 1000000)), reference(view.subarray(12345, 12345 + 1000000)));
});

test("crc32() copies through its 1 MiB scratch window and resumes across it", () => {
  const mib = 1024 * 1024;
  const bytes = new Uint8Array(3 * mib + 77);
  fillRandom(bytes, 42);
  for (const len of [mib - 1, mib, mib + 1, 2 * mib + 13, bytes.length]) {
    const view = bytes.subarray(0, len);
    assert.is(crc32(view), reference(view), `length ${len}`);
  }
  // Resumed by the caller, split anywhere.
  for (const split of [0, 1, 15, 16, 17, mib - 3, mib, 2 * mib + 1]) {
    const first = crc32(bytes.subarray(0, split));
    assert.is(crc32(bytes.subarray(split), first), reference(bytes), `split at ${split}`);
  }
  // zlib's seed semantics: crc32(b, crc32(a)) == crc32(a + b).
  assert.is(crc32(enc.encode("56789"), crc32(enc.encode("1234"))), 0xcbf43926);
});

test("core.crc32Of() checksums JS bytes through its read buffer and its own memory in place", () => {
  const mib = 1024 * 1024;
  const c = WasmCore.create();
  const bytes = new Uint8Array(2 * mib + 5);
  fillRandom(bytes, 77);
  for (const len of [0, 1, 124, mib, mib + 1, bytes.length]) {
    assert.is(c.crc32Of(bytes.subarray(0, len)), reference(bytes.subarray(0, len)), `length ${len}`);
  }
  assert.is(c.crc32Of(bytes.subarray(mib + 1), c.crc32Of(bytes.subarray(0, mib + 1))), reference(bytes), "resumed with a seed");
  // A view of the core's own memory is checksummed where it lies, and left as it was.
  const p = c.writeBufPtr + 7;
  fillRandom(c.u8.subarray(p, p + 5000), 9);
  const own = c.u8.subarray(p, p + 5000);
  const before = own.slice();
  assert.is(c.crc32Of(own), reference(before));
  assert.equal(own, before);
  assert.throws(() => c.crc32Of("abc" as unknown as Uint8Array), (e: unknown) => e instanceof TypeError);
});

test("crc32() throws TypeError for anything but a Uint8Array", () => {
  const bad: unknown[] = ["123456789", [1, 2, 3], new Uint16Array(4), new ArrayBuffer(8), new DataView(new ArrayBuffer(8)), undefined, null, 42];
  for (const value of bad) {
    assert.throws(() => crc32(value as Uint8Array), (e: unknown) => e instanceof TypeError, `crc32(${String(value)})`);
  }
});

test("crc32At() refuses ranges outside memory", () => {
  const size = core.u8.length;
  assert.throws(() => core.crc32At(size - 10, 11), (e: unknown) => e instanceof RangeError);
  assert.throws(() => core.crc32At(-1, 4), (e: unknown) => e instanceof RangeError);
  assert.throws(() => core.crc32At(0.5, 4), (e: unknown) => e instanceof RangeError);
  assert.is(core.crc32At(size - 10, 10), reference(core.u8.subarray(size - 10, size)));
});

test("crc32() refuses a view detached by memory growth", () => {
  const c = WasmCore.create();
  const old = c.u8.subarray(c.readBufPtr, c.readBufPtr + 100);
  assert.is(crc32(old), reference(old));
  c.borrowTableRegion(c.u8.length); // grows memory: the old view is detached
  assert.is(old.length, 0);
  assert.throws(() => crc32(old), (e: unknown) => e instanceof TypeError && /detached/.test((e as Error).message));
  const fresh = c.u8.subarray(c.readBufPtr, c.readBufPtr + 100);
  assert.is(crc32(fresh), reference(fresh));
});

test("the debug build computes the same CRCs", () => {
  const debug = WasmCore.create({ debug: true });
  assert.ok(debug.debug);
  const p = debug.writeBufPtr + 3;
  fillRandom(debug.u8.subarray(p, p + 70000), 8);
  for (const len of [0, 1, 15, 16, 31, 32, 33, 1000, 70000]) {
    assert.is(debug.crc32At(p, len), reference(debug.u8.subarray(p, p + len)), `length ${len}`);
  }
});

test.run();
