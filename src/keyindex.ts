/**
 * The key index: id -> (segment, offset, size), a hash table in wasm memory
 * (assembly/hashtable.ts), with checkpoints to and from index.N files.
 *
 * Map: types · KeyIndex (lookups, updates, batches) · checkpoint write ·
 * checkpoint load.
 *
 * Entry numbers: lookup() returns the entry holding a key, a dense number in
 * [0, count); segmentAt/offsetAt/sizeAt/keyAt read it. Any mutation (set,
 * setMany, remove, clear) may move entries, so an entry number is valid only
 * until the next one. Iterate with keyAt over [0, count).
 *
 * ## Checkpoint file (index.N), little-endian
 *
 * ```
 * 0    magic           8 bytes "SEGINDEX"
 * 8    version         u32  CHECKPOINT_VERSION
 * 12   layout          u32  the table layout version of the wasm that wrote it
 * 16   entry size      u32  44
 * 20   header size     u32  128
 * 24   count           u32  live entries
 * 28   slot bits       u32  the slot array has 2^bits u32 slots
 * 32   segment         u32  log position the checkpoint is valid through:
 * 36   offset          u32    segment, offset after the last record applied
 * 40   txid            u64    and the last transaction id committed
 * 48   entries bytes   u64  count * 44
 * 56   slots bytes     u64  4 << slot bits
 * 64   body crc        u32  zlib CRC-32 of the body
 * 68   reserved        u32  0
 * 72   build hash      32 bytes SHA-256 of the writing wasm (diagnostics only)
 * 104  reserved        20 bytes 0
 * 124  header crc      u32  zlib CRC-32 of bytes [0, 124)
 * 128  body            the entries array, then the slot array, as they lie in wasm memory
 * ```
 *
 * A checkpoint is valid if and only if: the file is at least a header long;
 * the header CRC matches (checked before any field is trusted); magic,
 * version, layout, entry size and header size are this build's; count fits
 * the slots at load <= 0.8; the two byte counts match count and slot bits;
 * the file is exactly header + body long; the body CRC matches; and the
 * loaded table passes tableVerify (slots point at live entries, one each,
 * and sampled keys are found where they lie). Anything else is an
 * IntegrityError naming the file: the caller rebuilds from the log.
 */

import { assert, IntegrityError, KEY_SIZE } from "./format.ts";
import type { File } from "./fs.ts";
import { crc32, describeValue, ENTRY_BYTES, TABLE_LAYOUT_VERSION, WasmCore } from "./wasm.ts";

/** Where a key's record lies: one pread away. All u32. */
export interface IndexValue {
  segment: number;
  offset: number;
  size: number;
}

/** The log position a checkpoint is valid through. */
export interface CheckpointMeta {
  /** Segment of the last record the checkpoint includes. */
  segment: number;
  /** Offset just past that record in its segment. */
  offset: number;
  /** Id of the last committed transaction it includes. */
  txid: bigint;
}

/** First bytes of an index checkpoint. */
export const CHECKPOINT_MAGIC = new Uint8Array([0x53, 0x45, 0x47, 0x49, 0x4e, 0x44, 0x45, 0x58]); // "SEGINDEX"
/** Checkpoint header format; a file of another version is not loaded (rebuild from the log). */
export const CHECKPOINT_VERSION = 1;
/** Bytes of the checkpoint header, body starts here. */
export const CHECKPOINT_HEADER_SIZE = 128;

// Header field offsets (see the table above).
const H_MAGIC = 0;
const H_VERSION = 8;
const H_LAYOUT = 12;
const H_ENTRY_SIZE = 16;
const H_HEADER_SIZE = 20;
const H_COUNT = 24;
const H_SLOT_BITS = 28;
const H_SEGMENT = 32;
const H_OFFSET = 36;
const H_TXID = 40;
const H_ENTRIES_BYTES = 48;
const H_SLOTS_BYTES = 56;
const H_BODY_CRC = 64;
const H_BUILD_HASH = 72;
const H_HEADER_CRC = 124;
const BUILD_HASH_BYTES = 32;

/**
 * Checkpoint body writes go through File.write in pieces of this size:
 * large enough that syscall cost vanishes, small enough that an adapter
 * copying each piece (the faulty one) holds little at once.
 */
const CHECKPOINT_IO_CHUNK = 8 * 1024 * 1024;
/** Reads are smaller so each piece is still in cache when it is checksummed. */
const CHECKPOINT_READ_CHUNK = 1024 * 1024;
/** Largest u64 (txid bound). */
const U64_MAX = (1n << 64n) - 1n;

if (CHECKPOINT_HEADER_SIZE !== H_HEADER_CRC + 4) throw new Error("keyindex: the header CRC must be its last field");
if (H_BUILD_HASH + BUILD_HASH_BYTES > H_HEADER_CRC) throw new Error("keyindex: header fields overlap");

function keyCheck(key: unknown, method: string): asserts key is Uint8Array {
  if (!(key instanceof Uint8Array) || key.length !== KEY_SIZE) {
    throw new TypeError(`KeyIndex.${method}: a key is a Uint8Array of ${KEY_SIZE} bytes, got ${describeValue(key)}`);
  }
}

function u32Check(value: number, name: string, method: string): void {
  if (value >>> 0 !== value) throw new RangeError(`KeyIndex.${method}: ${name} must be an integer in [0, 2^32), got ${value}`);
}

/** The KeyIndex a loadCheckpoint is building: its constructor adopts the loaded table instead of emptying it. */
let adopting: WasmCore | undefined;

/**
 * The key index over one WasmCore (one index per core; the table owns the
 * top of that core's memory).
 *
 * @example
 * const index = new KeyIndex(WasmCore.create());
 * index.set(id, 3, 4096, 141);
 * const e = index.lookup(id);
 * if (e >= 0) read(index.segmentAt(e), index.offsetAt(e), index.sizeAt(e));
 */
export class KeyIndex {
  readonly core: WasmCore;
  /** Value the last set() replaced or remove() removed (valid when that call returned true). */
  oldSegment = 0;
  oldOffset = 0;
  oldSize = 0;

  /**
   * An empty index in `core`. `capacityHint` presizes it when the count is
   * known (a rebuild from the log), so a bulk load does not grow.
   */
  constructor(core: WasmCore, capacityHint = 0) {
    if (!(core instanceof WasmCore)) throw new TypeError(`KeyIndex: expected a WasmCore, got ${describeValue(core)}`);
    u32Check(capacityHint, "capacityHint", "constructor");
    this.core = core;
    if (adopting === core) return; // loadCheckpoint laid the table out and claimed it
    core.tableClaim();
    if (!core.tableInit(capacityHint)) {
      core.tableRelease();
      throw new RangeError(`KeyIndex: a capacity of ${capacityHint} keys needs more than the 4 GiB of wasm32 memory`);
    }
  }

  /** Number of keys. */
  get count(): number {
    return this.core.tableCount;
  }

  /** Bytes of wasm memory the table occupies (entries with growth room, slots), for stats and bytes per key. */
  get memoryBytes(): number {
    return this.core.tableMemoryBytes;
  }

  /**
   * The entry holding `key` (>= 0), or -1. Valid until the next mutation.
   *
   * @example
   * const e = index.lookup(id); const where = e < 0 ? undefined : index.segmentAt(e);
   */
  lookup(key: Uint8Array): number {
    keyCheck(key, "lookup");
    const core = this.core;
    core.u8.set(key, core.keyPtr);
    return core.tableLookup();
  }

  /**
   * Looks `key` up and, when present, leaves its value in `foundSegment`,
   * `foundOffset` and `foundSize` (valid until the next find). One call for
   * the get path: the entry comes from the table itself, so the three
   * range checks of segmentAt/offsetAt/sizeAt have nothing to catch.
   *
   * @example
   * if (index.find(id)) read(index.foundSegment, index.foundOffset, index.foundSize);
   */
  find(key: Uint8Array): boolean {
    const entry = this.lookup(key);
    if (entry < 0) return false;
    const core = this.core;
    this.foundSegment = core.entrySegment(entry);
    this.foundOffset = core.entryOffset(entry);
    this.foundSize = core.entrySize(entry);
    return true;
  }

  /** The value the last successful find() found. */
  foundSegment = 0;
  foundOffset = 0;
  foundSize = 0;

  private entryCheck(entry: number, method: string): void {
    if (!(entry >>> 0 === entry && entry < this.core.tableCount)) {
      throw new RangeError(`KeyIndex.${method}: entry ${entry} is not in [0, ${this.core.tableCount})`);
    }
  }

  /** Segment of entry `entry` (from lookup, or any number in [0, count)). */
  segmentAt(entry: number): number {
    this.entryCheck(entry, "segmentAt");
    return this.core.entrySegment(entry);
  }

  /** Offset of entry `entry` in its segment. */
  offsetAt(entry: number): number {
    this.entryCheck(entry, "offsetAt");
    return this.core.entryOffset(entry);
  }

  /** Size of entry `entry`'s record. */
  sizeAt(entry: number): number {
    this.entryCheck(entry, "sizeAt");
    return this.core.entrySize(entry);
  }

  /**
   * A copy of entry `entry`'s key, into `out` when given.
   *
   * @example
   * const key = new Uint8Array(32);
   * for (let e = 0; e < index.count; e++) visit(index.keyAt(e, key));
   */
  keyAt(entry: number, out?: Uint8Array): Uint8Array {
    this.entryCheck(entry, "keyAt");
    const target = out ?? new Uint8Array(KEY_SIZE);
    if (!(target instanceof Uint8Array) || target.length < KEY_SIZE) {
      throw new TypeError(`KeyIndex.keyAt: out must be a Uint8Array of at least ${KEY_SIZE} bytes, got ${describeValue(out)}`);
    }
    const p = this.core.entryPtr(entry);
    target.set(this.core.u8.subarray(p, p + KEY_SIZE));
    return target;
  }

  /**
   * Inserts or updates `key`. Returns true when it replaced a value, which
   * is then in oldSegment/oldOffset/oldSize. Throws RangeError when the
   * table cannot grow (wasm32's 4 GiB), leaving the index as it was.
   *
   * @example
   * if (index.set(id, seg, off, size)) liveBytes[index.oldSegment] -= index.oldSize;
   */
  set(key: Uint8Array, segment: number, offset: number, size: number): boolean {
    keyCheck(key, "set");
    u32Check(segment, "segment", "set");
    u32Check(offset, "offset", "set");
    u32Check(size, "size", "set");
    const core = this.core;
    core.u8.set(key, core.keyPtr);
    const r = core.tableSet(segment, offset, size);
    if (r < 0) throw new RangeError(`KeyIndex.set: the index cannot grow past ${this.count} keys: wasm32 memory is 4 GiB`);
    if (r === 0) return false;
    this.oldSegment = core.tableOldSegment;
    this.oldOffset = core.tableOldOffset;
    this.oldSize = core.tableOldSize;
    return true;
  }

  /**
   * Removes `key`. Returns true when it was there; its value is then in
   * oldSegment/oldOffset/oldSize.
   */
  remove(key: Uint8Array): boolean {
    keyCheck(key, "remove");
    const core = this.core;
    core.u8.set(key, core.keyPtr);
    if (!core.tableRemove()) return false;
    this.oldSegment = core.tableOldSegment;
    this.oldOffset = core.tableOldOffset;
    this.oldSize = core.tableOldSize;
    return true;
  }

  /**
   * Looks up n keys in one go: `keys` holds them back to back (n * 32
   * bytes); out[i] becomes key i's entry or -1.
   *
   * @example
   * const out = new Int32Array(n); index.lookupMany(keys, n, out);
   */
  lookupMany(keys: Uint8Array, n: number, out: Int32Array): void {
    this.batchCheck(keys, n, "lookupMany");
    if (!(out instanceof Int32Array) || out.length < n) {
      throw new TypeError(`KeyIndex.lookupMany: out must be an Int32Array of at least ${n}, got ${describeValue(out)}`);
    }
    const core = this.core;
    const max = core.batchMax;
    const results = core.batchResultsPtr >>> 2;
    for (let done = 0; done < n; done += max) {
      const c = Math.min(max, n - done);
      core.u8.set(keys.subarray(done * KEY_SIZE, (done + c) * KEY_SIZE), core.batchPtr);
      core.tableLookupMany(c);
      out.set(core.i32.subarray(results, results + c), done);
    }
  }

  /**
   * Inserts or updates n keys in one go (bulk loads): `keys` back to back,
   * `values` as (segment, offset, size) triples. Returns how many keys were
   * new. Replaced values are not reported. On RangeError (memory) a prefix
   * of the batch has been applied.
   *
   * @example
   * index.setMany(keys, new Uint32Array([seg, off, size, seg, off2, size2]), 2);
   */
  setMany(keys: Uint8Array, values: Uint32Array, n: number): number {
    this.batchCheck(keys, n, "setMany");
    if (!(values instanceof Uint32Array) || values.length < n * 3) {
      throw new TypeError(`KeyIndex.setMany: values must be a Uint32Array of at least ${n * 3}, got ${describeValue(values)}`);
    }
    const core = this.core;
    const max = core.batchMax;
    let inserted = 0;
    for (let done = 0; done < n; done += max) {
      const c = Math.min(max, n - done);
      core.u8.set(keys.subarray(done * KEY_SIZE, (done + c) * KEY_SIZE), core.batchPtr);
      core.u32.set(values.subarray(done * 3, (done + c) * 3), core.batchValuesPtr >>> 2);
      const r = core.tableSetMany(c);
      if (r < 0) {
        throw new RangeError(`KeyIndex.setMany: the index cannot grow past ${this.count} keys (wasm32 memory is 4 GiB); ${done + (-1 - r)} of ${n} applied`);
      }
      inserted += r;
    }
    return inserted;
  }

  private batchCheck(keys: Uint8Array, n: number, method: string): void {
    if (!(keys instanceof Uint8Array)) throw new TypeError(`KeyIndex.${method}: keys must be a Uint8Array, got ${describeValue(keys)}`);
    if (!(n >>> 0 === n) || keys.length < n * KEY_SIZE) {
      throw new TypeError(`KeyIndex.${method}: ${n} keys need ${n * KEY_SIZE} bytes, keys has ${keys.length}`);
    }
  }

  /** Removes every key, keeping the table's size. */
  clear(): void {
    this.core.tableClear();
  }

  // -------------------------------------------------------------------------
  // Checkpoints

  /**
   * Writes the index as a checkpoint (header, then the table as it lies in
   * wasm memory) into `file` at increasing positions from 0, valid through
   * `meta`. Returns the bytes written. The caller does the rest of the
   * durable dance: temp name, datasync, rename, syncDir (see store.ts).
   * File.write gets views over wasm memory: an adapter must copy them
   * before returning, as the contract says.
   *
   * @example
   * const f = fs.open(tmp, "w+");
   * index.writeCheckpoint(f, { segment: 12, offset: 4096, txid: 77n });
   * f.datasync(); f.close(); fs.rename(tmp, paths.index(12)); fs.syncDir(root);
   */
  writeCheckpoint(file: File, meta: CheckpointMeta): number {
    u32Check(meta.segment, "meta.segment", "writeCheckpoint");
    u32Check(meta.offset, "meta.offset", "writeCheckpoint");
    if (typeof meta.txid !== "bigint" || meta.txid < 0n || meta.txid > U64_MAX) {
      throw new RangeError(`KeyIndex.writeCheckpoint: meta.txid must be a bigint in [0, 2^64), got ${String(meta.txid)}`);
    }
    const core = this.core;
    const count = core.tableCount;
    const slotCount = core.tableSlotCount;
    const slotBits = Math.log2(slotCount);
    assert(Number.isInteger(slotBits) && count * 5 <= slotCount * 4, "table state: slot count not a power of two or overloaded");
    const entriesBytes = count * core.entryBytes;
    const slotsBytes = slotCount * 4;
    const entriesPtr = core.tableBasePtr;
    const slotsPtr = core.tableSlotsPtr;
    assert(entriesPtr + entriesBytes <= slotsPtr && slotsPtr + slotsBytes <= core.u8.length, "table regions outside memory");

    const bodyCrc = core.crc32At(slotsPtr, slotsBytes, core.crc32At(entriesPtr, entriesBytes));
    const header = new Uint8Array(CHECKPOINT_HEADER_SIZE);
    const dv = new DataView(header.buffer);
    header.set(CHECKPOINT_MAGIC, H_MAGIC);
    dv.setUint32(H_VERSION, CHECKPOINT_VERSION, true);
    dv.setUint32(H_LAYOUT, core.tableLayoutVersion, true);
    dv.setUint32(H_ENTRY_SIZE, core.entryBytes, true);
    dv.setUint32(H_HEADER_SIZE, CHECKPOINT_HEADER_SIZE, true);
    dv.setUint32(H_COUNT, count, true);
    dv.setUint32(H_SLOT_BITS, slotBits, true);
    dv.setUint32(H_SEGMENT, meta.segment, true);
    dv.setUint32(H_OFFSET, meta.offset, true);
    dv.setBigUint64(H_TXID, meta.txid, true);
    dv.setBigUint64(H_ENTRIES_BYTES, BigInt(entriesBytes), true);
    dv.setBigUint64(H_SLOTS_BYTES, BigInt(slotsBytes), true);
    dv.setUint32(H_BODY_CRC, bodyCrc, true);
    header.set(hexBytes(core.buildHash), H_BUILD_HASH);
    dv.setUint32(H_HEADER_CRC, headerCrc(core, header), true);

    file.write(header, 0);
    let position = CHECKPOINT_HEADER_SIZE;
    position = writeRegion(file, core, entriesPtr, entriesBytes, position);
    position = writeRegion(file, core, slotsPtr, slotsBytes, position);
    assert(position === CHECKPOINT_HEADER_SIZE + entriesBytes + slotsBytes);
    return position;
  }

  /**
   * Reads the header of a checkpoint and returns the log position it is
   * valid through, without loading the table (to pick among index.N files).
   * Throws IntegrityError as loadCheckpoint does for a bad header. Give
   * the `core` you have: without one, crc32() makes a private core (34 MiB
   * of address space, a garbage collection at open).
   *
   * @example
   * const { segment, offset, txid } = KeyIndex.readCheckpointMeta(fs.open(path, "r"), core);
   */
  static readCheckpointMeta(file: File, core?: WasmCore): CheckpointMeta {
    return headerParse(file, core === undefined ? crc32 : (bytes) => core.crc32Of(bytes)).meta;
  }

  /**
   * Loads a checkpoint straight into `core`'s memory (no rehash) and returns
   * the index and the log position it is valid through. A wrong magic,
   * version, layout, size or CRC throws IntegrityError naming `file.path`
   * and loads nothing: the caller then rebuilds from the log (`core` is
   * free for a new KeyIndex).
   *
   * @example
   * let index: KeyIndex, meta: CheckpointMeta;
   * try { ({ index, meta } = KeyIndex.loadCheckpoint(core, fs.open(path, "r"))); }
   * catch (e) { if (!(e instanceof IntegrityError)) throw e; index = new KeyIndex(core); meta = LOG_START; }
   */
  static loadCheckpoint(core: WasmCore, file: File): { index: KeyIndex; meta: CheckpointMeta } {
    if (!(core instanceof WasmCore)) throw new TypeError(`KeyIndex.loadCheckpoint: expected a WasmCore, got ${describeValue(core)}`);
    core.tableClaim();
    try {
      const h = headerParse(file, (bytes) => core.crc32Of(bytes));
      const r = core.tablePrepareLoad(h.count, h.slotBits);
      if (r === -1) throw integrityError(file, `count ${h.count} in 2^${h.slotBits} slots does not fit (load over 0.8, or a slot count this build never makes)`, H_COUNT);
      if (r === -2) throw new RangeError(`KeyIndex.loadCheckpoint: ${file.path} holds ${h.count} keys, more than 4 GiB of wasm32 memory holds`);
      const entriesPtr = core.tableBasePtr;
      const slotsPtr = core.tableSlotsPtr;
      // Each piece is checksummed right after it is read, while it is in cache.
      let bodyCrc = readRegion(file, core, entriesPtr, h.entriesBytes, CHECKPOINT_HEADER_SIZE, 0);
      bodyCrc = readRegion(file, core, slotsPtr, h.slotsBytes, CHECKPOINT_HEADER_SIZE + h.entriesBytes, bodyCrc);
      if (bodyCrc !== h.bodyCrc) {
        throw integrityError(file, `body CRC is ${hex32(bodyCrc)}, header says ${hex32(h.bodyCrc)}`, CHECKPOINT_HEADER_SIZE);
      }
      const verified = core.tableVerify();
      if (verified !== 0) {
        throw integrityError(file, `table does not verify (${VERIFY_FAILURES[verified] ?? `code ${verified}`})`, CHECKPOINT_HEADER_SIZE);
      }
      adopting = core;
      let index: KeyIndex;
      try {
        index = new KeyIndex(core);
      } finally {
        adopting = undefined;
      }
      assert(index.count === h.count);
      return { index, meta: h.meta };
    } catch (e) {
      core.tableRelease();
      throw e;
    }
  }
}

const VERIFY_FAILURES: Record<number, string> = {
  1: "a slot points past the entries",
  2: "slots and entries differ in number",
  3: "a key is not found where it lies: written by another hash function",
};

interface ParsedHeader {
  count: number;
  slotBits: number;
  entriesBytes: number;
  slotsBytes: number;
  bodyCrc: number;
  meta: CheckpointMeta;
}

function integrityError(file: File, what: string, offset: number): IntegrityError {
  return new IntegrityError(`index checkpoint ${file.path} is not valid: ${what} (offset ${offset}); rebuild the index from the log`, {
    file: file.path,
    offset,
  });
}

function hex32(x: number): string {
  return "0x" + x.toString(16).padStart(8, "0");
}

function hexBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length >>> 1);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** CRC of header bytes [0, H_HEADER_CRC). */
function headerCrc(core: WasmCore, header: Uint8Array): number {
  return core.crc32Of(header.subarray(0, H_HEADER_CRC));
}

/** Reads and checks a checkpoint header; `crcOf` computes a CRC-32 (the caller's core, or crc32()). */
function headerParse(file: File, crcOf: (bytes: Uint8Array) => number): ParsedHeader {
  const size = file.size();
  if (size < CHECKPOINT_HEADER_SIZE) {
    throw integrityError(file, `the file is ${size} bytes, shorter than the ${CHECKPOINT_HEADER_SIZE}-byte header`, 0);
  }
  const header = new Uint8Array(CHECKPOINT_HEADER_SIZE);
  const got = file.read(header, 0);
  if (got !== CHECKPOINT_HEADER_SIZE) throw integrityError(file, `read ${got} header bytes of ${CHECKPOINT_HEADER_SIZE}`, 0);
  for (let i = 0; i < CHECKPOINT_MAGIC.length; i++) {
    if (header[H_MAGIC + i] !== CHECKPOINT_MAGIC[i]) throw integrityError(file, `wrong magic: not an index checkpoint`, H_MAGIC);
  }
  const dv = new DataView(header.buffer);
  // Checksum before trust: no field is used before the header CRC matches.
  const crcStored = dv.getUint32(H_HEADER_CRC, true);
  const crcActual = crcOf(header.subarray(0, H_HEADER_CRC));
  if (crcStored !== crcActual) {
    throw integrityError(file, `header CRC is ${hex32(crcActual)}, stored ${hex32(crcStored)}`, H_HEADER_CRC);
  }
  const version = dv.getUint32(H_VERSION, true);
  if (version !== CHECKPOINT_VERSION) throw integrityError(file, `version ${version}, this build reads ${CHECKPOINT_VERSION}`, H_VERSION);
  const layout = dv.getUint32(H_LAYOUT, true);
  const entrySize = dv.getUint32(H_ENTRY_SIZE, true);
  const headerSize = dv.getUint32(H_HEADER_SIZE, true);
  if (headerSize !== CHECKPOINT_HEADER_SIZE) throw integrityError(file, `header size ${headerSize}, expected ${CHECKPOINT_HEADER_SIZE}`, H_HEADER_SIZE);
  const count = dv.getUint32(H_COUNT, true);
  const slotBits = dv.getUint32(H_SLOT_BITS, true);
  const entriesBytes = Number(dv.getBigUint64(H_ENTRIES_BYTES, true));
  const slotsBytes = Number(dv.getBigUint64(H_SLOTS_BYTES, true));
  if (layout !== TABLE_LAYOUT_VERSION) {
    throw integrityError(file, `table layout ${layout}, this build's is ${TABLE_LAYOUT_VERSION}`, H_LAYOUT);
  }
  if (entrySize !== ENTRY_BYTES) throw integrityError(file, `entry size ${entrySize}, expected ${ENTRY_BYTES}`, H_ENTRY_SIZE);
  if (slotBits > 30 || slotsBytes !== 4 * 2 ** slotBits) {
    throw integrityError(file, `slot bytes ${slotsBytes} do not match 2^${slotBits} slots`, H_SLOTS_BYTES);
  }
  if (entriesBytes !== count * entrySize) {
    throw integrityError(file, `entry bytes ${entriesBytes} do not match ${count} entries`, H_ENTRIES_BYTES);
  }
  const expected = CHECKPOINT_HEADER_SIZE + entriesBytes + slotsBytes;
  if (size !== expected) {
    throw integrityError(file, `the file is ${size} bytes, the header says ${expected}${size < expected ? " (truncated)" : ""}`, Math.min(size, expected));
  }
  return {
    count,
    slotBits,
    entriesBytes,
    slotsBytes,
    bodyCrc: dv.getUint32(H_BODY_CRC, true),
    meta: {
      segment: dv.getUint32(H_SEGMENT, true),
      offset: dv.getUint32(H_OFFSET, true),
      txid: dv.getBigUint64(H_TXID, true),
    },
  };
}

function writeRegion(file: File, core: WasmCore, ptr: number, len: number, position: number): number {
  for (let done = 0; done < len; done += CHECKPOINT_IO_CHUNK) {
    const n = Math.min(CHECKPOINT_IO_CHUNK, len - done);
    file.write(core.u8.subarray(ptr + done, ptr + done + n), position + done);
  }
  return position + len;
}

/** Reads len bytes at `position` into memory at ptr, returning their CRC continued from `crc`. */
function readRegion(file: File, core: WasmCore, ptr: number, len: number, position: number, crc: number): number {
  for (let done = 0; done < len;) {
    const n = Math.min(CHECKPOINT_READ_CHUNK, len - done);
    const got = file.read(core.u8.subarray(ptr + done, ptr + done + n), position + done);
    if (got <= 0) throw integrityError(file, `ends at ${position + done}, inside the body`, position + done);
    crc = core.crc32At(ptr + done, got, crc);
    done += got;
  }
  return crc;
}
