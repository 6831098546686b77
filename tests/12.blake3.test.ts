// BLAKE3-256 of our wasm hasher (src/blake3.ts over assembly/blake3.ts)
// against hash-wasm's portable build, an independent implementation: the
// specification's vectors, every length around the chunk, block, subtree
// and input-region boundaries, random lengths fed in random pieces (so
// the carried tail, the subtree alignment and the stack merges meet every
// case), both the release and the debug build (assertions on), the pool,
// and the generated compression code being current.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { SeededRandom } from "../adapters/faulty.ts";
import { hex, referenceHex } from "./_support/blake3-reference.ts";
import { Blake3 } from "../src/blake3.ts";
import { contentId } from "../src/contentid.ts";

const test = suite("blake3");

/** Our hash of `bytes`, fed in pieces of the given lengths. */
function oursHex(bytes: Uint8Array, pieces: number[], debug: boolean): string {
  const hasher = Blake3.create({ debug });
  let at = 0;
  for (const p of pieces) {
    hasher.update(bytes.subarray(at, at + p));
    at += p;
  }
  assert.is(at, bytes.length, "pieces cover the input");
  const digest = hex(hasher.digest());
  hasher.release();
  return digest;
}
// The specification's test input: byte i is i % 251.
const INPUT = Uint8Array.from({ length: 3 * 1024 * 1024 + 4096 }, (_, i) => i % 251);

test("the specification's vectors: the empty input and 'abc'", () => {
  for (const debug of [false, true]) {
    assert.is(oursHex(new Uint8Array(0), [], debug), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
    assert.is(oursHex(new TextEncoder().encode("abc"), [3], debug), "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");
  }
});

test("every length near a block, chunk, subtree and input-region boundary, whole and in pieces", () => {
  const KiB = 1024;
  const edges = [0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 2049, 3072, 3073, 4096, 4097, 5120, 5121, 8192, 8193, 16384, 31744, 102400,
    256 * KiB - 1, 256 * KiB, 256 * KiB + 1, 257 * KiB, 257 * KiB + 1, 512 * KiB + 1, 1024 * KiB, 3 * 1024 * KiB + 1];
  for (const len of edges) {
    const bytes = INPUT.subarray(0, len);
    const want = referenceHex(bytes);
    const third = Math.floor(len / 3);
    const splits = [[len], [third, len - third], Array.from({ length: Math.ceil(len / 1000) }, (_, i) => Math.min(1000, len - i * 1000))];
    for (const pieces of splits) {
      assert.is(oursHex(bytes, pieces, false), want, `release, ${len} bytes in ${pieces.length} pieces`);
    }
    if (len <= 300 * KiB) assert.is(oursHex(bytes, [len], true), want, `debug, ${len} bytes`);
  }
});

test("random lengths in random pieces (seeded)", () => {
  const random = new SeededRandom(2026); // seeded, so a failure reproduces
  const next = () => random.next();
  for (let round = 0; round < 200; round++) {
    const len = Math.floor(next() * (round < 150 ? 20000 : 700000));
    const pieces: number[] = [];
    for (let left = len; left > 0;) {
      const p = Math.min(left, 1 + Math.floor(next() * (next() < 0.5 ? 3000 : 300000)));
      pieces.push(p);
      left -= p;
    }
    const bytes = INPUT.subarray(0, len);
    assert.is(oursHex(bytes, pieces, round % 4 === 0), referenceHex(bytes), `${len} bytes in ${pieces.length} pieces (round ${round})`);
  }
});

test("digest can be taken midway and input continues after it", () => {
  const hasher = Blake3.create();
  hasher.update(INPUT.subarray(0, 5000));
  assert.is(hex(hasher.digest()), referenceHex(INPUT.subarray(0, 5000)));
  hasher.update(INPUT.subarray(5000, 300000));
  assert.is(hex(hasher.digest()), referenceHex(INPUT.subarray(0, 300000)));
  hasher.init();
  assert.is(hex(hasher.update(INPUT.subarray(0, 3)).digest()), referenceHex(INPUT.subarray(0, 3)));
  hasher.release();
});

test("released hashers come back from the pool fresh; a released hasher refuses use", async () => {
  const a = Blake3.create();
  a.update(INPUT.subarray(0, 9999));
  a.release();
  a.release(); // twice is harmless
  assert.throws(() => a.update(INPUT.subarray(0, 1)), /after release/);
  // The next hasher may reuse a's instance: it must start from nothing.
  const b = Blake3.create();
  assert.is(hex(b.update(INPUT.subarray(0, 10)).digest()), referenceHex(INPUT.subarray(0, 10)));
  b.release();
  // Concurrent content ids each take their own hasher.
  const ids = await Promise.all([1, 2000, 70000].map((n) => contentId(INPUT.subarray(0, n))));
  assert.equal(ids.map(hex), [1, 2000, 70000].map((n) => referenceHex(INPUT.subarray(0, n))));
});

test("assembly/blake3_compress.ts is what scripts/gen-blake3-compress.mjs writes", async () => {
  // The script is a Node script; under Deno too, node runs it. The repository root is found
  // upwards from this file (tests/ under Deno, dist/tests/ under Node).
  const { spawnSync } = await import("node:child_process");
  const { existsSync } = await import("node:fs");
  const { dirname, join } = await import("node:path");
  const { fileURLToPath } = await import("node:url");
  let root = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(root, "scripts", "gen-blake3-compress.mjs"))) root = dirname(root);
  const run = spawnSync("node", [join(root, "scripts", "gen-blake3-compress.mjs"), "--check"], { encoding: "utf8" });
  assert.is(run.status, 0, `${run.stderr}`);
});

test.run();
