/**
 * Fuzz targets: the decoders that read bytes from disk or from the network,
 * each with a seeded input generator (random bytes, and mutations of valid
 * inputs, some structure-aware so they get past the checksums) and its
 * contract, checked on every input:
 *
 * - segment scanner (`SegmentScanner`, and check.ts's `walkSegment`):
 *   never throws; every record it returns passes the validity rules of
 *   format.ts (checked here independently, with a table CRC); a single
 *   damaged byte stops the scan exactly there; walkSegment's records and
 *   damaged stretches tile the file; its buffer stays within the chunk size
 *   for inputs smaller than a chunk;
 * - index checkpoint loader (`KeyIndex.loadCheckpoint`): only
 *   IntegrityError (or the documented RangeError for more keys than wasm32
 *   holds); a loaded index answers lookups (no endless probe); wasm memory
 *   grows by no more than the file's size; the original loads back intact;
 * - hints decoder (`decodeHints`): only IntegrityError, or hints whose every
 *   field is in range;
 * - wire protocol (`FrameReader`, `decodePayload`, `parseCall`,
 *   `parseServerMessage`): only protocol errors (SegstoreError EPROTOCOL);
 *   no frame buffer over FRAME_SIZE_MAX; the connection's codec still
 *   decodes a good message afterwards.
 *
 * Every target also bounds the time of each input (no hang), and
 * `decodeClaimCases` gives msgpack headers that claim huge lengths in a few
 * bytes, which a decoder must refuse without allocating for the claim.
 *
 * tests/95.fuzz runs a few thousand inputs per target; `npm run fuzz`
 * (scripts/fuzz.mjs) runs 100,000 or more.
 *
 * @example
 * for (const t of fuzzTargets()) console.log(t.name, fuzzRun(t, { seed: 1, count: 1000 }));
 */
import { encode } from "@msgpack/msgpack";
import {
  BLOB_RECORD_SIZE, COMMIT_RECORD_SIZE, DELETE_RECORD_SIZE, IntegrityError, KEY_SIZE, MAX_RECORD_SIZE, PUT_HEADER_SIZE,
  RECORD_HEADER_SIZE, RECORD_SIZE_MAX, RECORD_SIZE_MIN, SEGMENT_HEADER_SIZE, SEGMENT_MAGIC, SegstoreError, TAG_BLOB,
  TAG_COMMIT, TAG_DELETE, TAG_PUT,
} from "../../src/format.ts";
import type { File } from "../../src/fs.ts";
import { decodeHints, encodeHints, type Hints, type SegmentStat } from "../../src/hints.ts";
import { CHECKPOINT_HEADER_SIZE, KeyIndex } from "../../src/keyindex.ts";
import { SCAN_CHUNK_SIZE, SegmentScanner } from "../../src/segments.ts";
import { walkSegment } from "../../src/check.ts";
import { crc32, WasmCore } from "../../src/wasm.ts";
import {
  createCodec, decodePayload, FRAME_SIZE_MAX, FrameReader, parseCall, parseServerMessage, writeFrameHeader,
} from "../../src/net/protocol.ts";
import { SeededRandom } from "../../adapters/faulty.ts";

// ---------------------------------------------------------------------------
// Limits of the harness

/** Longest one input may take, in ms: far above any honest input (microseconds), far below a hang. */
export const FUZZ_INPUT_MS_MAX = 2000;
/** A broken contract: which target, which input, and why; `seed` and `index` replay it. */
export class FuzzViolation extends Error {
  constructor(readonly target: string, readonly seed: number, readonly index: number, why: string, readonly input: Uint8Array) {
    super(`fuzz ${target}: input ${index} of seed ${seed} (${input.length} bytes): ${why}`);
    this.name = "FuzzViolation";
  }
}

/** One decoder under fuzz. */
export interface FuzzTarget {
  name: string;
  /** Input number `index` of a run: random bytes or a mutation of a valid input. */
  input(rng: SeededRandom): Uint8Array;
  /** Runs the decoder; throws (any Error) when the contract is broken. Returns whether the input was accepted. */
  run(input: Uint8Array): boolean;
  /** Throws unless the decoder still handles a valid input exactly. */
  sanity(): void;
}

/** What a run did. */
export interface FuzzStats {
  target: string;
  seed: number;
  inputs: number;
  /** Inputs the decoder accepted (decoded, or scanned at least one record), and those it refused. */
  accepted: number;
  rejected: number;
  /** Slowest input, ms. */
  slowestMs: number;
}

/**
 * Runs `count` inputs of `target` from `seed`. Throws FuzzViolation at the
 * first broken contract (the decoder's own error as `cause`).
 */
export function fuzzRun(
  target: FuzzTarget, options: { seed: number; count: number; onProgress?: (done: number) => void },
): FuzzStats {
  const stats: FuzzStats = { target: target.name, seed: options.seed, inputs: 0, accepted: 0, rejected: 0, slowestMs: 0 };
  const rng = new SeededRandom(options.seed);
  target.sanity();
  for (let i = 0; i < options.count; i++) {
    const input = target.input(rng);
    const t0 = performance.now();
    let accepted: boolean;
    try {
      accepted = target.run(input);
    } catch (e) {
      throw Object.assign(new FuzzViolation(target.name, options.seed, i, (e as Error).message ?? String(e), input), { cause: e });
    }
    const ms = performance.now() - t0;
    if (ms > FUZZ_INPUT_MS_MAX) throw new FuzzViolation(target.name, options.seed, i, `took ${ms.toFixed(0)} ms (limit ${FUZZ_INPUT_MS_MAX})`, input);
    stats.slowestMs = Math.max(stats.slowestMs, ms);
    stats.inputs++;
    if (accepted) stats.accepted++;
    else stats.rejected++;
    if ((i & 1023) === 1023) {
      options.onProgress?.(i + 1);
      target.sanity();
    }
  }
  target.sanity();
  return stats;
}

// ---------------------------------------------------------------------------
// Helpers: an independent CRC-32, a file over bytes, mutations

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** zlib's CRC-32, byte at a time: slow, simple, and not the code under test. */
export function crc32Reference(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A read-only File over bytes in memory (what the decoders read through). */
export class BytesFile implements File {
  constructor(readonly bytes: Uint8Array, readonly path = "fuzz-input") {}
  read(buf: Uint8Array, position: number): number {
    const n = Math.max(0, Math.min(buf.length, this.bytes.length - position));
    buf.set(this.bytes.subarray(position, position + n));
    return n;
  }
  write(_buf: Uint8Array, _position: number): void {
    throw new Error("BytesFile is read-only");
  }
  writeAsync(_buf: Uint8Array, _position: number): Promise<void> {
    return Promise.reject(new Error("BytesFile is read-only"));
  }
  size(): number {
    return this.bytes.length;
  }
  truncate(): void {
    throw new Error("BytesFile is read-only");
  }
  datasync(): void {}
  datasyncAsync(): Promise<void> {
    return Promise.resolve();
  }
  sync(): void {}
  close(): void {}
  lock(): boolean {
    return true;
  }
  unlock(): void {}
}

function randomBytes(rng: SeededRandom, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.below(256);
  return out;
}

/** Sizes worth trying in a length field: bounds, off-by-ones, powers of two, the input's own size. */
function interestingU32(rng: SeededRandom, size: number): number {
  const picks = [
    0, 1, 8, 9, 16, 17, 32, 41, 44, 45, 46, 88, 89, 90, 127, 128, 255, 256, 65535, 65536, MAX_RECORD_SIZE,
    MAX_RECORD_SIZE + 1, 0x7fffffff, 0x80000000, 0xffffffff, size, size - 1, size + 1, 1 << rng.below(32),
  ];
  return picks[rng.below(picks.length)] >>> 0;
}

/** One generic mutation: flip, set, insert, delete, duplicate, truncate, extend, or an interesting u32. */
function mutate(rng: SeededRandom, input: Uint8Array): Uint8Array {
  const b = input.slice();
  const n = b.length;
  switch (rng.below(9)) {
    case 0:
      if (n > 0) b[rng.below(n)] ^= 1 << rng.below(8);
      return b;
    case 1:
      if (n > 0) b[rng.below(n)] = rng.below(256);
      return b;
    case 2: {
      const at = rng.below(n + 1);
      const ins = randomBytes(rng, 1 + rng.below(16));
      const out = new Uint8Array(n + ins.length);
      out.set(b.subarray(0, at));
      out.set(ins, at);
      out.set(b.subarray(at), at + ins.length);
      return out;
    }
    case 3: {
      if (n === 0) return b;
      const at = rng.below(n);
      const len = 1 + rng.below(Math.min(64, n - at));
      const out = new Uint8Array(n - len);
      out.set(b.subarray(0, at));
      out.set(b.subarray(at + len), at);
      return out;
    }
    case 4: {
      if (n === 0) return b;
      const at = rng.below(n);
      const len = 1 + rng.below(Math.min(256, n - at));
      const out = new Uint8Array(n + len);
      out.set(b.subarray(0, at + len));
      out.set(b.subarray(at, at + len), at + len);
      out.set(b.subarray(at + len), at + 2 * len);
      return out;
    }
    case 5:
      return b.subarray(0, rng.below(n + 1));
    case 6: {
      const out = new Uint8Array(n + 1 + rng.below(64));
      out.set(b);
      out.set(randomBytes(rng, out.length - n), n);
      return out;
    }
    default: {
      if (n < 4) return b;
      const at = rng.below(n - 3);
      new DataView(b.buffer, b.byteOffset).setUint32(at, interestingU32(rng, n), rng.below(2) === 0);
      return b;
    }
  }
}

function mutateSome(rng: SeededRandom, input: Uint8Array): Uint8Array {
  let b = input;
  for (let k = 1 + rng.below(3); k > 0; k--) b = mutate(rng, b);
  return b;
}

// ---------------------------------------------------------------------------
// Segment scanner (and walkSegment)

function recordMake(tag: number, body: Uint8Array): Uint8Array {
  const rec = new Uint8Array(RECORD_HEADER_SIZE + body.length);
  const dv = new DataView(rec.buffer);
  dv.setUint32(4, rec.length, true);
  rec[8] = tag;
  rec.set(body, RECORD_HEADER_SIZE);
  dv.setUint32(0, crc32Reference(rec.subarray(4)), true);
  return rec;
}

/** A valid segment: the magic and 0..24 records of every kind, and where each record starts. */
function segmentValid(rng: SeededRandom): { bytes: Uint8Array; offsets: number[] } {
  const records: Uint8Array[] = [];
  for (let i = rng.below(25); i > 0; i--) {
    const tag = rng.below(4);
    const key = randomBytes(rng, KEY_SIZE);
    let body: Uint8Array;
    if (tag === TAG_PUT) {
      const len = rng.below(10) === 0 ? rng.below(5000) : rng.below(100);
      body = new Uint8Array(KEY_SIZE + len);
      body.set(key);
      body.set(randomBytes(rng, len), KEY_SIZE);
    } else if (tag === TAG_DELETE) {
      body = new Uint8Array(DELETE_RECORD_SIZE - RECORD_HEADER_SIZE);
      body.set(key);
      new DataView(body.buffer).setUint32(KEY_SIZE, rng.below(100), true);
    } else if (tag === TAG_COMMIT) {
      body = new Uint8Array(COMMIT_RECORD_SIZE - RECORD_HEADER_SIZE);
      new DataView(body.buffer).setBigUint64(0, BigInt(rng.below(1 << 30)), true);
    } else {
      body = randomBytes(rng, BLOB_RECORD_SIZE - RECORD_HEADER_SIZE);
      body.set(key);
    }
    records.push(recordMake(tag, body));
  }
  const size = SEGMENT_HEADER_SIZE + records.reduce((a, r) => a + r.length, 0);
  const bytes = new Uint8Array(size);
  bytes.set(SEGMENT_MAGIC);
  const offsets: number[] = [];
  let at = SEGMENT_HEADER_SIZE;
  for (const r of records) {
    offsets.push(at);
    bytes.set(r, at);
    at += r.length;
  }
  return { bytes, offsets };
}

/** The segment a single-byte change was made to, and where: the scan must stop exactly at the record holding it. */
let segmentExpect: { original: Uint8Array; offsets: number[]; changedAt: number } | undefined;

function segmentInput(rng: SeededRandom): Uint8Array {
  segmentExpect = undefined;
  const roll = rng.below(10);
  if (roll === 0) return randomBytes(rng, rng.below(300));
  if (roll === 1) {
    const b = randomBytes(rng, SEGMENT_HEADER_SIZE + rng.below(400));
    b.set(SEGMENT_MAGIC);
    return b;
  }
  const { bytes, offsets } = segmentValid(rng);
  if (roll === 2 && bytes.length > SEGMENT_HEADER_SIZE) {
    // One changed byte, nothing else: the differential check applies.
    const b = bytes.slice();
    const at = SEGMENT_HEADER_SIZE + rng.below(b.length - SEGMENT_HEADER_SIZE);
    b[at] ^= 1 + rng.below(255);
    segmentExpect = { original: bytes, offsets, changedAt: at };
    return b;
  }
  if (roll === 3 && offsets.length > 0) {
    // A record's body changed and its CRC fixed: still a valid record, which the scanner must take.
    const b = bytes.slice();
    const i = rng.below(offsets.length);
    const o = offsets[i];
    const size = new DataView(b.buffer).getUint32(o + 4, true);
    if (size > RECORD_HEADER_SIZE) b[o + RECORD_HEADER_SIZE + rng.below(size - RECORD_HEADER_SIZE)] ^= 0x40;
    new DataView(b.buffer).setUint32(o, crc32Reference(b.subarray(o + 4, o + size)), true);
    return b;
  }
  return mutateSome(rng, bytes);
}

function segmentRun(input: Uint8Array): boolean {
  const file = new BytesFile(input);
  const size = input.length;
  const scan = new SegmentScanner(file, size, crc32);
  const seen: number[] = [];
  let expectOffset = SEGMENT_HEADER_SIZE;
  let steps = 0;
  for (let r = scan.next(); r !== undefined; r = scan.next()) {
    if (++steps > size / RECORD_HEADER_SIZE + 2) throw new Error("the scan does not end");
    if (r.offset !== expectOffset) throw new Error(`record at ${r.offset}, expected ${expectOffset}`);
    recordCheck(input, r.offset, r.size, r.tag, r.bytes);
    seen.push(r.offset);
    expectOffset = r.offset + r.size;
  }
  if (scan.end === undefined) throw new Error("scan ended without saying why");
  if (scan.end === "eof" ? scan.endOffset !== size : scan.end !== "bad-magic" && scan.endOffset !== expectOffset) {
    throw new Error(`scan ended (${scan.end}) at ${scan.endOffset}, last record ended at ${expectOffset}, size ${size}`);
  }
  const buf = (scan as unknown as { buf: Uint8Array }).buf;
  if (size <= SCAN_CHUNK_SIZE && buf.length > SCAN_CHUNK_SIZE) throw new Error(`scan buffer grew to ${buf.length} bytes for a ${size}-byte file`);
  if (segmentExpect !== undefined) {
    const { offsets, changedAt } = segmentExpect;
    const before = offsets.filter((o, i) => (offsets[i + 1] ?? Infinity) <= changedAt && o < changedAt);
    const damaged = offsets.findIndex((o, i) => o <= changedAt && changedAt < (offsets[i + 1] ?? Infinity));
    if (JSON.stringify(seen) !== JSON.stringify(offsets.slice(0, damaged))) {
      throw new Error(`one byte changed at ${changedAt}: scanned ${seen.length} records, expected exactly the ${before.length} before it`);
    }
  }
  walkCheck(input);
  return seen.length > 0;
}

/** The validity rules of format.ts, checked independently of segments.ts. */
function recordCheck(input: Uint8Array, offset: number, size: number, tag: number, bytes: Uint8Array): void {
  if (tag > TAG_BLOB) throw new Error(`record at ${offset} has tag ${tag}`);
  if (size < RECORD_SIZE_MIN[tag] || size > RECORD_SIZE_MAX[tag]) throw new Error(`record at ${offset}: size ${size} out of bounds for tag ${tag}`);
  if (offset + size > input.length) throw new Error(`record at ${offset} of ${size} bytes passes the end (${input.length})`);
  if (bytes.length !== size) throw new Error(`record at ${offset}: ${bytes.length} bytes for size ${size}`);
  for (let i = 0; i < size; i++) if (bytes[i] !== input[offset + i]) throw new Error(`record at ${offset}: byte ${i} differs from the file`);
  const dv = new DataView(input.buffer, input.byteOffset);
  if (dv.getUint32(offset + 4, true) !== size || input[offset + 8] !== tag) throw new Error(`record at ${offset}: header differs`);
  if (crc32Reference(input.subarray(offset + 4, offset + size)) !== dv.getUint32(offset, true)) throw new Error(`record at ${offset}: CRC does not match`);
}

/** walkSegment: valid records and damaged stretches tile the file, in order, and it ends. */
function walkCheck(input: Uint8Array): void {
  const spans: [number, number][] = [];
  let badMagic = false;
  const file = new BytesFile(input);
  walkSegment(file, input.length, (r) => {
    recordCheck(input, r.offset, r.size, r.tag, r.bytes);
    spans.push([r.offset, r.offset + r.size]);
  }, (start, end, reason) => {
    if (end <= start && !(reason === "bad-magic" && input.length === 0)) throw new Error(`walkSegment: empty damage ${start}..${end} (${reason})`);
    if (reason === "bad-magic") badMagic = true;
    spans.push([start, end]);
  });
  let at = badMagic || input.length < SEGMENT_HEADER_SIZE ? 0 : SEGMENT_HEADER_SIZE;
  for (const [s, e] of spans) {
    if (s !== at) throw new Error(`walkSegment: a span starts at ${s}, expected ${at}`);
    at = e;
  }
  if (at !== input.length && !(input.length < SEGMENT_HEADER_SIZE && spans.length === 0)) {
    throw new Error(`walkSegment: spans end at ${at}, the file at ${input.length}`);
  }
}

function segmentSanity(): void {
  const { bytes, offsets } = segmentValid(new SeededRandom(42));
  const scan = new SegmentScanner(new BytesFile(bytes), bytes.length, crc32);
  const seen: number[] = [];
  for (let r = scan.next(); r !== undefined; r = scan.next()) seen.push(r.offset);
  if (scan.end !== "eof" || JSON.stringify(seen) !== JSON.stringify(offsets)) throw new Error("segment scanner: a valid segment no longer scans");
}

// ---------------------------------------------------------------------------
// Index checkpoint loader

const H_FIELDS = [8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 64];
const H_HEADER_CRC = 124;

/** Valid checkpoints of 0, 1, 40 and 700 keys, made once. */
let checkpointBases: { bytes: Uint8Array; keys: Uint8Array[] }[] | undefined;
let checkpointCore: WasmCore | undefined;

function checkpointBase(rng: SeededRandom): { bytes: Uint8Array; keys: Uint8Array[] } {
  if (checkpointBases === undefined) {
    checkpointBases = [0, 1, 40, 700].map((n) => {
      const r = new SeededRandom(1000 + n);
      const index = new KeyIndex(WasmCore.create(), n);
      const keys: Uint8Array[] = [];
      for (let i = 0; i < n; i++) {
        const k = randomBytes(r, KEY_SIZE);
        keys.push(k);
        index.set(k, r.below(50), SEGMENT_HEADER_SIZE + r.below(100000), PUT_HEADER_SIZE + r.below(1000));
      }
      const out = new MemoryFile();
      index.writeCheckpoint(out, { segment: 7, offset: 4096, txid: 99n });
      return { bytes: out.contents(), keys };
    });
  }
  return checkpointBases[rng.below(checkpointBases.length)];
}

/** A growable in-memory file that checkpoints are written to. */
class MemoryFile extends BytesFile {
  #buf = new Uint8Array(1024);
  #len = 0;
  constructor() {
    super(new Uint8Array(0), "checkpoint");
  }
  override write(buf: Uint8Array, position: number): void {
    const end = position + buf.length;
    if (end > this.#buf.length) {
      const grown = new Uint8Array(Math.max(end, this.#buf.length * 2));
      grown.set(this.#buf.subarray(0, this.#len));
      this.#buf = grown;
    }
    this.#buf.set(buf, position);
    this.#len = Math.max(this.#len, end);
  }
  contents(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }
}

function headerCrcFix(b: Uint8Array): void {
  if (b.length < CHECKPOINT_HEADER_SIZE) return;
  new DataView(b.buffer, b.byteOffset).setUint32(H_HEADER_CRC, crc32Reference(b.subarray(0, H_HEADER_CRC)), true);
}

let checkpointExpect: { keys: Uint8Array[] } | undefined;

function checkpointInput(rng: SeededRandom): Uint8Array {
  checkpointExpect = undefined;
  const roll = rng.below(10);
  if (roll === 0) return randomBytes(rng, rng.below(400));
  const base = checkpointBase(rng);
  if (roll === 1) {
    checkpointExpect = { keys: base.keys };
    return base.bytes.slice();
  }
  const b = base.bytes.slice();
  const dv = new DataView(b.buffer);
  if (roll <= 4) {
    // A header field changed, the header CRC fixed: the checks behind the CRC must hold.
    const at = H_FIELDS[rng.below(H_FIELDS.length)];
    dv.setUint32(at, interestingU32(rng, b.length), true);
    headerCrcFix(b);
    return b;
  }
  if (roll <= 6 && b.length > CHECKPOINT_HEADER_SIZE) {
    // The body changed, both CRCs fixed: only tableVerify stands between it and the index.
    for (let k = 1 + rng.below(4); k > 0; k--) {
      const at = CHECKPOINT_HEADER_SIZE + rng.below(b.length - CHECKPOINT_HEADER_SIZE);
      if (rng.below(2) === 0) b[at] ^= 1 << rng.below(8);
      else if (at + 4 <= b.length) dv.setUint32(at - ((at - CHECKPOINT_HEADER_SIZE) % 4), interestingU32(rng, b.length), true);
    }
    dv.setUint32(64, crc32Reference(b.subarray(CHECKPOINT_HEADER_SIZE)), true);
    headerCrcFix(b);
    return b;
  }
  const m = mutateSome(rng, b);
  if (rng.below(2) === 0) headerCrcFix(m);
  return m;
}

function checkpointRun(input: Uint8Array): boolean {
  const core = (checkpointCore ??= WasmCore.create());
  const memoryBefore = core.memory.buffer.byteLength;
  let index: KeyIndex;
  try {
    index = KeyIndex.loadCheckpoint(core, new BytesFile(input)).index;
  } catch (e) {
    if (e instanceof IntegrityError || e instanceof RangeError) {
      if (checkpointExpect !== undefined) throw new Error(`a valid checkpoint was refused: ${(e as Error).message}`);
      boundMemory(core, memoryBefore, input.length);
      return false;
    }
    throw e;
  }
  try {
    boundMemory(core, memoryBefore, input.length);
    // Every lookup ends (wasm probes are bounded by the load factor the loader checked).
    const key = new Uint8Array(KEY_SIZE);
    for (let e = 0; e < index.count; e++) {
      index.keyAt(e, key);
      index.lookup(key);
    }
    const r = new SeededRandom(input.length);
    for (let i = 0; i < 16; i++) index.lookup(randomBytes(r, KEY_SIZE));
    if (checkpointExpect !== undefined) {
      if (index.count !== checkpointExpect.keys.length) throw new Error(`loaded ${index.count} keys of ${checkpointExpect.keys.length}`);
      for (const k of checkpointExpect.keys) if (index.lookup(k) < 0) throw new Error("a key of the valid checkpoint is missing");
    }
    return true;
  } finally {
    core.tableRelease(); // the next input loads into the same core
  }
}

/** Wasm memory may grow by the file's size (the table is the file's body), plus page rounding. */
function boundMemory(core: WasmCore, before: number, inputLength: number): void {
  const grown = core.memory.buffer.byteLength - before;
  if (grown > 0 && grown > 2 * inputLength + 2 * 65536) {
    throw new Error(`wasm memory grew by ${grown} bytes for a ${inputLength}-byte checkpoint`);
  }
}

function checkpointSanity(): void {
  const base = checkpointBase(new SeededRandom(3));
  const core = (checkpointCore ??= WasmCore.create());
  const { index } = KeyIndex.loadCheckpoint(core, new BytesFile(base.bytes));
  try {
    if (index.count !== base.keys.length || base.keys.some((k) => index.lookup(k) < 0)) throw new Error("checkpoint loader: a valid checkpoint no longer loads");
  } finally {
    core.tableRelease();
  }
}

// ---------------------------------------------------------------------------
// Hints decoder

function hintsValid(rng: SeededRandom): Hints {
  const segments = new Map<number, SegmentStat>();
  for (let i = rng.below(12); i > 0; i--) {
    segments.set(rng.below(1000), { count: rng.below(1000), bytes: rng.below(1 << 30), deleteBytes: rng.below(1 << 20), size: rng.below(1 << 30) });
  }
  return {
    segment: rng.below(1000), offset: rng.below(1 << 30), txid: BigInt(rng.below(1 << 30)) * BigInt(1 + rng.below(1000)),
    segments, compact: [...segments.keys()].filter(() => rng.below(3) === 0),
  };
}

/** A random msgpack value, shaped like hints now and then. */
function valueRandom(rng: SeededRandom, depth = 0): unknown {
  switch (rng.below(depth > 3 ? 6 : 9)) {
    case 0: return rng.below(2) === 0 ? rng.below(2 ** 31) : -rng.below(2 ** 31);
    case 1: return BigInt(rng.below(1 << 30)) << BigInt(rng.below(34));
    case 2: return null;
    case 3: return rng.below(2) === 0;
    case 4: return ["version", "segment", "offset", "txid", "segments", "compact", "x"][rng.below(7)];
    case 5: return randomBytes(rng, rng.below(8));
    case 6: return Array.from({ length: rng.below(6) }, () => valueRandom(rng, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (const k of ["version", "segment", "offset", "txid", "segments", "compact"]) if (rng.below(4) !== 0) o[k] = valueRandom(rng, depth + 1);
      if (rng.below(3) === 0) o.version = 1;
      return o;
    }
  }
}

let hintsExpect: Hints | undefined;

function hintsInput(rng: SeededRandom): Uint8Array {
  hintsExpect = undefined;
  const roll = rng.below(10);
  if (roll === 0) return randomBytes(rng, rng.below(200));
  if (roll <= 2) return encode(valueRandom(rng), { useBigInt64: true });
  const h = hintsValid(rng);
  const bytes = encodeHints(h);
  if (roll === 3) {
    hintsExpect = h;
    return bytes;
  }
  return mutateSome(rng, bytes);
}

function hintsRun(input: Uint8Array): boolean {
  let h: Hints;
  try {
    h = decodeHints(input, "fuzz-hints");
  } catch (e) {
    if (!(e instanceof IntegrityError)) throw e;
    if (hintsExpect !== undefined) throw new Error(`valid hints were refused: ${e.message}`);
    return false;
  }
  const u32 = (v: unknown) => typeof v === "number" && Number.isInteger(v) && v >= 0 && v < 2 ** 32;
  const count = (v: unknown) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
  if (!u32(h.segment) || !u32(h.offset)) throw new Error("decoded hints: position is not two u32");
  if (typeof h.txid !== "bigint" || h.txid < 0n || h.txid >= 1n << 64n) throw new Error("decoded hints: txid is not a u64");
  for (const [s, st] of h.segments) {
    if (!u32(s) || ![st.count, st.bytes, st.deleteBytes, st.size].every(count)) throw new Error(`decoded hints: segment row ${s} out of range`);
  }
  if (!h.compact.every(u32)) throw new Error("decoded hints: compact holds a non-segment");
  if (hintsExpect !== undefined && JSON.stringify(hintsFlat(h)) !== JSON.stringify(hintsFlat(hintsExpect))) throw new Error("valid hints decoded differently");
  return true;
}

function hintsFlat(h: Hints): unknown {
  return [h.segment, h.offset, String(h.txid), [...h.segments], h.compact];
}

function hintsSanity(): void {
  const h = hintsValid(new SeededRandom(5));
  if (JSON.stringify(hintsFlat(decodeHints(encodeHints(h), "sanity"))) !== JSON.stringify(hintsFlat(h))) throw new Error("hints: valid hints no longer decode");
}

// ---------------------------------------------------------------------------
// Wire protocol

const protocolCodec = createCodec();

/** A call or a server message, as a client or server would send it. */
function messageRandom(rng: SeededRandom): unknown {
  const methods = ["hello", "get", "put", "commit", "vote", "uploadChunk", "blobStart", "invalidate", "list"];
  const args = Array.from({ length: rng.below(5) }, () => valueRandom(rng, 2));
  if (rng.below(2) === 0) args.unshift(randomBytes(rng, KEY_SIZE));
  switch (rng.below(4)) {
    case 0: return [1 + rng.below(1 << 30), methods[rng.below(methods.length)], args];
    case 1: return [0, methods[rng.below(methods.length)], args];
    case 2: return [1 + rng.below(1000), null, valueRandom(rng)];
    default: return [1 + rng.below(1000), ["IntegrityError", "boom", { segment: 3 }], null];
  }
}

function frame(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + payload.length);
  writeFrameHeader(out, 0, payload.length);
  out.set(payload, 4);
  return out;
}

function protocolInput(rng: SeededRandom): Uint8Array {
  const roll = rng.below(10);
  if (roll === 0) return randomBytes(rng, rng.below(200));
  const frames: Uint8Array[] = [];
  for (let i = 1 + rng.below(4); i > 0; i--) frames.push(frame(protocolCodec.encoder.encode(messageRandom(rng))));
  const stream = new Uint8Array(frames.reduce((a, f) => a + f.length, 0));
  let at = 0;
  for (const f of frames) {
    stream.set(f, at);
    at += f.length;
  }
  if (roll === 1) return stream;
  if (roll === 2) {
    // A frame whose payload is random bytes: the msgpack decoder itself under fuzz.
    return frame(randomBytes(rng, 1 + rng.below(100)));
  }
  if (roll === 3 && stream.length > 8) {
    // Mutate only payload bytes, keeping the frame lengths: the decoder, not the framer, meets the damage.
    const b = stream.slice();
    for (let k = 1 + rng.below(4); k > 0; k--) b[4 + rng.below(b.length - 4)] = rng.below(256);
    return b;
  }
  return mutateSome(rng, stream);
}

/** The only error the protocol layer may raise for bad bytes. */
function protocolErrorExpected(e: unknown): void {
  if (!(e instanceof SegstoreError) || e.code !== "EPROTOCOL") throw e;
}

function protocolRun(input: Uint8Array): boolean {
  // The input arrives in random pieces, as a socket would deliver it.
  const rng = new SeededRandom(input.length * 31 + (input[0] ?? 0));
  const reader = new FrameReader();
  let decoded = 0;
  for (let at = 0; at < input.length;) {
    const n = 1 + rng.below(Math.max(1, input.length - at));
    const chunk = input.subarray(at, at + n);
    at += n;
    let payloads: Uint8Array[];
    try {
      payloads = reader.push(chunk);
    } catch (e) {
      protocolErrorExpected(e);
      return decoded > 0; // the connection is closed on a framing error
    }
    for (const p of payloads) {
      if (p.length > FRAME_SIZE_MAX) throw new Error(`a payload of ${p.length} bytes passed FRAME_SIZE_MAX`);
      let value: unknown;
      try {
        value = decodePayload(protocolCodec, p);
      } catch (e) {
        protocolErrorExpected(e);
        continue;
      }
      for (const parse of [parseCall, parseServerMessage]) {
        try {
          parse(value);
        } catch (e) {
          protocolErrorExpected(e);
        }
      }
      decoded++;
    }
  }
  return decoded > 0;
}

function protocolSanity(): void {
  const msg = [7, "get", [new Uint8Array(KEY_SIZE).fill(1)]];
  const reader = new FrameReader();
  const payloads = reader.push(frame(protocolCodec.encoder.encode(msg)));
  if (payloads.length !== 1) throw new Error("protocol: a valid frame no longer splits");
  const call = parseCall(decodePayload(protocolCodec, payloads[0]));
  if (call.msgid !== 7 || call.method !== "get" || !(call.args[0] instanceof Uint8Array)) throw new Error("protocol: a valid call no longer decodes");
}

// ---------------------------------------------------------------------------
// The targets, and the length-claim cases

/** Every fuzz target, in a fixed order. */
export function fuzzTargets(): FuzzTarget[] {
  return [
    { name: "segment-scanner", input: segmentInput, run: segmentRun, sanity: segmentSanity },
    { name: "checkpoint-loader", input: checkpointInput, run: checkpointRun, sanity: checkpointSanity },
    { name: "hints-decoder", input: hintsInput, run: hintsRun, sanity: hintsSanity },
    { name: "protocol-decoder", input: protocolInput, run: protocolRun, sanity: protocolSanity },
  ];
}

/**
 * msgpack headers that claim a huge array, map, string, binary or
 * extension in a few bytes (alone, and nested one level): a decoder must
 * refuse each in about the time it takes to read it.
 */
export function decodeClaimCases(): { name: string; bytes: Uint8Array }[] {
  const heads: [string, number[]][] = [
    ["array16", [0xdc, 0xff, 0xff]], ["array32", [0xdd, 0x00, 0xff, 0xff, 0xff]], ["array32-max", [0xdd, 0xff, 0xff, 0xff, 0xff]],
    ["map16", [0xde, 0xff, 0xff]], ["map32", [0xdf, 0x00, 0xff, 0xff, 0xff]], ["str32", [0xdb, 0x00, 0xff, 0xff, 0xff]],
    ["bin32", [0xc6, 0x00, 0xff, 0xff, 0xff]], ["ext32", [0xc9, 0x00, 0xff, 0xff, 0xff, 0x01]],
  ];
  const out: { name: string; bytes: Uint8Array }[] = [];
  for (const [name, h] of heads) {
    out.push({ name, bytes: new Uint8Array(h) });
    out.push({ name: `${name} in an array`, bytes: new Uint8Array([0x93, 0x01, ...h]) });
  }
  return out;
}

/**
 * Whether a decoder's error shows it refused a length claim before
 * allocating for it: msgpack-js checks an array's or map's claimed length
 * against its limit ("Max length exceeded") before `new Array(length)`, and
 * checks a string's, binary's or extension's against the bytes left
 * ("Insufficient data") before copying; an array or map refused only for
 * insufficient data was allocated first.
 */
export function refusedBeforeAllocating(caseName: string, error: Error | undefined): boolean {
  if (error === undefined) return false;
  const collection = /^(array|map)/.test(caseName);
  return /Max length exceeded/.test(error.message) || (!collection && /Insufficient data/.test(error.message));
}

/**
 * The msgpack decoders that read untrusted bytes, as functions that return
 * their documented error (undefined if the bytes decoded) and rethrow any
 * other.
 */
export function claimDecoders(): { name: string; decode: (bytes: Uint8Array) => Error | undefined }[] {
  return [
    {
      name: "decodeHints",
      decode: (b) => {
        try {
          decodeHints(b, "claim");
          return undefined;
        } catch (e) {
          if (!(e instanceof IntegrityError)) throw e;
          return e;
        }
      },
    },
    {
      name: "protocol decodePayload",
      decode: (b) => {
        try {
          decodePayload(protocolCodec, b);
          return undefined;
        } catch (e) {
          protocolErrorExpected(e);
          return e as Error;
        }
      },
    },
  ];
}
