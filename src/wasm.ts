/**
 * The WebAssembly core's loader: the only file that knows the module's
 * export names and its memory layout (assembly/layout.ts).
 *
 * Map: module loading · WasmCore (views, fixed regions, crc32At, table
 * calls) · crc32() for bytes anywhere.
 *
 * The module bytes are embedded (src/wasm_module.generated.ts, written by
 * scripts/build-wasm.mjs) and compiled synchronously once per process; each
 * WasmCore is one instance with its own memory, so each store owns its key
 * index and buffers. Loading reads no file, so Node, Deno and a
 * `deno compile` binary behave alike.
 *
 * Hazard: `u8`, `dv`, `u32` and `i32` are views over wasm memory. Growing the
 * memory (an insert into the key index may) detaches them; WasmCore replaces
 * them in one place, refreshViews(), after every call that can grow. So read
 * `core.u8` afresh after such a call; never keep a view (or a subarray of
 * one) across it.
 */

import { assert, KEY_SIZE, MAX_RECORD_SIZE } from "./format.ts";
import {
  WASM_BUILD_HASH,
  WASM_DEBUG_BASE64,
  WASM_DEBUG_BUILD_HASH,
  WASM_RELEASE_BASE64,
} from "./wasm_module.generated.ts";

export { WASM_BUILD_HASH };

/**
 * The table layout (entry layout, slot encoding, hash function) this loader
 * reads entries with; every core checks its module's TABLE_LAYOUT_VERSION
 * equals it. Checkpoints record it.
 */
export const TABLE_LAYOUT_VERSION = 1;
/** Bytes per table entry (assembly/layout.ts ENTRY_*): key[32], then segment, offset, size as u32. */
export const ENTRY_BYTES = KEY_SIZE + 12;
const ENTRY_SEGMENT = 32;
const ENTRY_OFFSET = 36;
const ENTRY_SIZE = 40;
/** The write buffer holds one largest record plus this many bytes of small records behind it. */
const WRITE_BUF_SLACK = 1024 * 1024;
/** Bytes per wasm page. */
const PAGE_SIZE = 65536;
/** wasm32 memory cannot pass 4 GiB (65536 pages). */
const MEMORY_BYTES_MAX = 2 ** 32;
/** crc32() of bytes outside any core copies them through a scratch window in pieces this big. */
const CRC_SCRATCH_CHUNK = 1024 * 1024;

// Fields of the layout block (u32 index), in assembly/layout.ts layoutDescribe() order.
const LAYOUT_VERSION = 0;
const LAYOUT_DEBUG = 1;
const LAYOUT_KEY = 2;
const LAYOUT_BATCH_KEYS = 3;
const LAYOUT_BATCH_MAX = 4;
const LAYOUT_BATCH_VALUES = 5;
const LAYOUT_BATCH_RESULTS = 6;
const LAYOUT_READ_BUF = 7;
const LAYOUT_READ_BUF_SIZE = 8;
const LAYOUT_WRITE_BUF = 9;
const LAYOUT_WRITE_BUF_SIZE = 10;
const LAYOUT_TABLE_BASE = 11;
const LAYOUT_ENTRY_SIZE = 12;
const LAYOUT_STATE = 13;

// Fields of the table state block (u32 index from its start; assembly/layout.ts STATE_*).
const STATE_COUNT = 0;
const STATE_CAPACITY = 1;
const STATE_SLOTS_PTR = 2;
const STATE_SLOT_COUNT = 3;
const STATE_OLD_SEGMENT = 4;
const STATE_OLD_OFFSET = 5;
const STATE_OLD_SIZE = 6;

/** The module's exports, as assembly/index.ts declares them (i32 results come back signed). */
interface CoreExports {
  memory: WebAssembly.Memory;
  layoutDescribe(): number;
  crc32(ptr: number, len: number, seed: number): number;
  tableInit(capacityHint: number): number;
  tableClear(): void;
  tableLookup(): number;
  tableSet(segment: number, offset: number, size: number): number;
  tableRemove(): number;
  tableLookupMany(n: number): void;
  tableSetMany(n: number): number;
  tablePrepareLoad(count: number, slotBits: number): number;
  tableVerify(all: number): number;
}

/** The bytes of a wasm build embedded as base64 (the generated module holds them so), for compiling. */
export function base64Decode(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

let releaseModule: WebAssembly.Module | undefined;
let debugModule: WebAssembly.Module | undefined;

/** Compiles a build once per process (decoding its base64 once). */
function moduleOf(debug: boolean): WebAssembly.Module {
  if (debug) return (debugModule ??= new WebAssembly.Module(base64Decode(WASM_DEBUG_BASE64) as BufferSource));
  return (releaseModule ??= new WebAssembly.Module(base64Decode(WASM_RELEASE_BASE64) as BufferSource));
}

/** Reads an AssemblyScript string (UTF-16, byte length at ptr - 4) for abort messages. */
function readWasmString(memory: WebAssembly.Memory, ptr: number): string {
  if (ptr === 0) return "";
  const dv = new DataView(memory.buffer);
  const bytes = dv.getUint32(ptr - 4, true);
  let text = "";
  for (let i = 0; i < bytes; i += 2) text += String.fromCharCode(dv.getUint16(ptr + i, true));
  return text;
}

/** Which core owns an ArrayBuffer (its memory's current buffer), so crc32() can checksum in place. */
const coreByBuffer = new WeakMap<ArrayBufferLike, WasmCore>();

/** Options of WasmCore.create. */
export interface WasmCoreOptions {
  /**
   * Use the debug build: assertions on, so a wasm access outside its
   * regions or a broken table invariant traps with a message (slower).
   * Default false.
   */
  debug?: boolean;
}

/**
 * One instance of the WebAssembly core with its own memory: CRC-32 and the
 * key index's hash table, over buffers JavaScript shares with it.
 *
 * @example
 * const core = WasmCore.create();
 * core.u8.set(record, core.writeBufPtr);
 * const crc = core.crc32At(core.writeBufPtr + 4, record.length - 4);
 */
export class WasmCore {
  readonly memory: WebAssembly.Memory;
  /** Byte view over the whole memory; replaced after any call that can grow memory. */
  u8: Uint8Array;
  /** DataView over the whole memory; replaced with u8. */
  dv: DataView;
  /** u32 view over the whole memory (index = byte offset / 4); replaced with u8. */
  u32: Uint32Array;
  /** i32 view over the whole memory; replaced with u8. */
  i32: Int32Array;
  /** True for the debug build (assertions on). */
  readonly debug: boolean;
  /** Hex SHA-256 of this instance's module bytes. */
  readonly buildHash: string;

  /** Records being appended: room for one largest record plus 1 MiB. */
  readonly writeBufPtr: number;
  readonly writeBufSize: number;
  /** Records read from segments: room for one largest record. */
  readonly readBufPtr: number;
  readonly readBufSize: number;
  /** 32 bytes: the key of single-key table calls. */
  readonly keyPtr: number;
  /** Room for batchMax keys of 32 bytes (lookupMany/setMany). */
  readonly batchPtr: number;
  readonly batchMax: number;
  /** batchMax values of 3 u32 (segment, offset, size) for setMany. */
  readonly batchValuesPtr: number;
  /** batchMax i32 results of lookupMany. */
  readonly batchResultsPtr: number;
  /** Start of the hash table (its entries); memory above belongs to the table. */
  readonly tableBasePtr: number;
  /** Bytes per table entry (key, segment, offset, size). */
  readonly entryBytes: number;
  /** Version of the table's layout and hash; a checkpoint of another version is not loaded. */
  readonly tableLayoutVersion: number;

  private readonly exports: CoreExports;
  /** u32 index of the table state block. */
  private readonly stateIndex: number;
  private tableOwned = false;

  private constructor(options: WasmCoreOptions) {
    const debug = options.debug === true;
    let memoryForAbort: WebAssembly.Memory | undefined;
    const imports = {
      env: {
        abort(message: number, fileName: number, line: number, column: number): never {
          const m = memoryForAbort;
          const text = m ? `${readWasmString(m, message)} (${readWasmString(m, fileName)}:${line}:${column})` : "";
          throw new Error(`segstore wasm core aborted: ${text}`);
        },
      },
    };
    const instance = new WebAssembly.Instance(moduleOf(debug), imports);
    this.exports = instance.exports as unknown as CoreExports;
    this.memory = this.exports.memory;
    memoryForAbort = this.memory;
    this.debug = debug;
    this.buildHash = debug ? WASM_DEBUG_BUILD_HASH : WASM_BUILD_HASH;

    const layout = new Uint32Array(this.memory.buffer, this.exports.layoutDescribe() >>> 0, 16);
    this.tableLayoutVersion = layout[LAYOUT_VERSION];
    this.keyPtr = layout[LAYOUT_KEY];
    this.batchPtr = layout[LAYOUT_BATCH_KEYS];
    this.batchMax = layout[LAYOUT_BATCH_MAX];
    this.batchValuesPtr = layout[LAYOUT_BATCH_VALUES];
    this.batchResultsPtr = layout[LAYOUT_BATCH_RESULTS];
    this.readBufPtr = layout[LAYOUT_READ_BUF];
    this.readBufSize = layout[LAYOUT_READ_BUF_SIZE];
    this.writeBufPtr = layout[LAYOUT_WRITE_BUF];
    this.writeBufSize = layout[LAYOUT_WRITE_BUF_SIZE];
    this.tableBasePtr = layout[LAYOUT_TABLE_BASE];
    this.entryBytes = layout[LAYOUT_ENTRY_SIZE];
    this.stateIndex = layout[LAYOUT_STATE] >>> 2;

    // The module and this loader must agree on every fact the engine relies on.
    assert(this.tableLayoutVersion === TABLE_LAYOUT_VERSION, `wasm table layout ${this.tableLayoutVersion}, loader reads ${TABLE_LAYOUT_VERSION}`);
    assert((layout[LAYOUT_DEBUG] === 1) === debug, "wasm debug flag does not match the build asked for");
    assert(this.entryBytes === ENTRY_BYTES, `wasm entry size ${this.entryBytes}, expected ${ENTRY_BYTES}`);
    assert(this.readBufSize >= MAX_RECORD_SIZE, "wasm read buffer smaller than MAX_RECORD_SIZE");
    assert(this.writeBufSize >= MAX_RECORD_SIZE + WRITE_BUF_SLACK, "wasm write buffer smaller than MAX_RECORD_SIZE + 1 MiB");
    assert(this.batchMax >= 1 && this.batchPtr + this.batchMax * KEY_SIZE <= this.batchValuesPtr, "wasm batch regions overlap");
    assert(this.tableBasePtr >= this.writeBufPtr + this.writeBufSize, "wasm table overlaps the write buffer");
    assert(this.memory.buffer.byteLength >= this.tableBasePtr, "wasm memory does not reach the table base");

    this.u8 = new Uint8Array(0);
    this.dv = new DataView(this.memory.buffer);
    this.u32 = new Uint32Array(0);
    this.i32 = new Int32Array(0);
    this.refreshViews();
  }

  /**
   * A new core: one instance and its own memory (about 34 MiB of address
   * space for the fixed regions; pages are committed only when touched).
   *
   * @example
   * const core = WasmCore.create();            // release build
   * const checked = WasmCore.create({ debug: true });
   */
  static create(options: WasmCoreOptions = {}): WasmCore {
    return new WasmCore(options);
  }

  /**
   * Replaces the views after memory grew (growing detaches the old buffer,
   * so a zero-length u8 is the sign). The one place views are made.
   */
  private refreshViews(): void {
    if (this.u8.byteLength !== 0) return;
    const buffer = this.memory.buffer;
    this.u8 = new Uint8Array(buffer);
    this.dv = new DataView(buffer);
    this.u32 = new Uint32Array(buffer);
    this.i32 = new Int32Array(buffer);
    coreByBuffer.set(buffer, this);
  }

  /**
   * zlib CRC-32 of memory[ptr, ptr+len), continuing from `seed` (the CRC of
   * the bytes before; 0 to start). Returns a u32.
   *
   * @example
   * const whole = core.crc32At(p, 100);
   * const same = core.crc32At(p + 60, 40, core.crc32At(p, 60));
   */
  crc32At(ptr: number, len: number, seed = 0): number {
    if (!(ptr >>> 0 === ptr && len >>> 0 === len && ptr + len <= this.u8.length)) {
      throw new RangeError(`crc32At: range [${ptr}, ${ptr}+${len}) is not inside wasm memory of ${this.u8.length} bytes`);
    }
    return this.exports.crc32(ptr, len, seed >>> 0) >>> 0;
  }

  /**
   * zlib CRC-32 of bytes anywhere (a JS buffer, or a view of this core),
   * continuing from `seed`: a view over this core's memory is checksummed in
   * place, other bytes are copied through the read buffer in pieces. Use
   * between calls that use the read buffer (a record being read), e.g. for
   * a file header at open, without the private core crc32() would make.
   *
   * @example
   * core.crc32Of(headerBytes.subarray(0, 124)) === storedCrc
   */
  crc32Of(bytes: Uint8Array, seed = 0): number {
    if (!(bytes instanceof Uint8Array)) throw new TypeError(`crc32Of: expected a Uint8Array, got ${describeValue(bytes)}`);
    if (bytes.buffer === this.u8.buffer) return this.crc32At(bytes.byteOffset, bytes.byteLength, seed);
    const scratch = this.readBufPtr;
    assert(this.readBufSize >= CRC_SCRATCH_CHUNK);
    let crc = seed >>> 0;
    for (let done = 0; done < bytes.length; done += CRC_SCRATCH_CHUNK) {
      const piece = bytes.subarray(done, Math.min(bytes.length, done + CRC_SCRATCH_CHUNK));
      this.u8.set(piece, scratch);
      crc = this.crc32At(scratch, piece.length, crc);
    }
    return crc;
  }

  // -------------------------------------------------------------------------
  // The hash table, for src/keyindex.ts. Keys go in at keyPtr / batchPtr.

  /** Marks the table region as used by a KeyIndex; one per core. */
  tableClaim(): void {
    if (this.tableOwned) throw new Error("segstore: this WasmCore already has a KeyIndex; create a core per index");
    this.tableOwned = true;
  }

  /** Gives the table region back (after a failed checkpoint load). */
  tableRelease(): void {
    this.tableOwned = false;
  }

  /** Empties the table and sizes it for `capacityHint` entries; false when that needs more than 4 GiB. */
  tableInit(capacityHint: number): boolean {
    const r = this.exports.tableInit(capacityHint >>> 0);
    this.refreshViews();
    return r === 0;
  }

  tableClear(): void {
    this.exports.tableClear();
  }

  /** Entry number of the key at keyPtr, or -1. */
  tableLookup(): number {
    return this.exports.tableLookup();
  }

  /** Sets the key at keyPtr: 1 replaced (old value in tableOld*), 0 inserted, -1 out of memory. */
  tableSet(segment: number, offset: number, size: number): number {
    const r = this.exports.tableSet(segment, offset, size);
    this.refreshViews();
    return r;
  }

  /** Removes the key at keyPtr: true when it was there (old value in tableOld*). */
  tableRemove(): boolean {
    return this.exports.tableRemove() === 1;
  }

  /** Looks up n <= batchMax keys at batchPtr; results (entry or -1) as i32 at batchResultsPtr. */
  tableLookupMany(n: number): void {
    assert(n >= 0 && n <= this.batchMax);
    this.exports.tableLookupMany(n);
  }

  /**
   * Sets n <= batchMax keys at batchPtr to the values at batchValuesPtr.
   * Returns how many were new, or -1 - (how many were applied) when memory ran out.
   */
  tableSetMany(n: number): number {
    assert(n >= 0 && n <= this.batchMax);
    const r = this.exports.tableSetMany(n);
    this.refreshViews();
    return r;
  }

  /**
   * Lays the table out for `count` entries and 2^slotBits slots, to be read
   * in at tableBasePtr and tableSlotsPtr. 0 ok, -1 impossible counts, -2 out of memory.
   */
  tablePrepareLoad(count: number, slotBits: number): number {
    const r = this.exports.tablePrepareLoad(count >>> 0, slotBits >>> 0);
    this.refreshViews();
    return r;
  }

  /**
   * Checks the table's invariants: 0 sound, else a code (1 bad slot, 2 slot
   * count, 3 an entry not found at its number). Looks up a sample of 4096
   * entries, or every entry when `all` (O(count) random reads; for tests).
   */
  tableVerify(all = false): number {
    return this.exports.tableVerify(all ? 1 : 0);
  }

  get tableCount(): number {
    return this.u32[this.stateIndex + STATE_COUNT];
  }
  get tableCapacity(): number {
    return this.u32[this.stateIndex + STATE_CAPACITY];
  }
  get tableSlotsPtr(): number {
    return this.u32[this.stateIndex + STATE_SLOTS_PTR];
  }
  get tableSlotCount(): number {
    return this.u32[this.stateIndex + STATE_SLOT_COUNT];
  }
  /** Bytes of memory the table occupies: entries (with unused capacity), padding, slots. */
  get tableMemoryBytes(): number {
    return this.tableSlotsPtr + this.tableSlotCount * 4 - this.tableBasePtr;
  }
  /** Old value of the key the last tableSet replaced or tableRemove removed. */
  get tableOldSegment(): number {
    return this.u32[this.stateIndex + STATE_OLD_SEGMENT];
  }
  get tableOldOffset(): number {
    return this.u32[this.stateIndex + STATE_OLD_OFFSET];
  }
  get tableOldSize(): number {
    return this.u32[this.stateIndex + STATE_OLD_SIZE];
  }

  /** Byte offset of entry e (its key; the value follows). */
  entryPtr(e: number): number {
    return this.tableBasePtr + e * ENTRY_BYTES;
  }
  entrySegment(e: number): number {
    return this.u32[(this.tableBasePtr + e * ENTRY_BYTES + ENTRY_SEGMENT) >>> 2];
  }
  entryOffset(e: number): number {
    return this.u32[(this.tableBasePtr + e * ENTRY_BYTES + ENTRY_OFFSET) >>> 2];
  }
  entrySize(e: number): number {
    return this.u32[(this.tableBasePtr + e * ENTRY_BYTES + ENTRY_SIZE) >>> 2];
  }

  /**
   * For tests and benchmarks: makes `len` bytes from tableBasePtr usable as
   * a scratch region (growing memory) and returns tableBasePtr. Only while
   * no KeyIndex owns the table: a later KeyIndex reinitialises the region.
   *
   * @example
   * const p = core.borrowTableRegion(64 << 20); core.u8.fill(7, p, p + (64 << 20));
   */
  borrowTableRegion(len: number): number {
    if (this.tableOwned) throw new Error("borrowTableRegion: a KeyIndex owns this core's table region");
    const end = this.tableBasePtr + len;
    if (!(len >>> 0 === len && end <= MEMORY_BYTES_MAX)) throw new RangeError(`borrowTableRegion: ${len} bytes do not fit wasm32 memory`);
    const have = this.memory.buffer.byteLength;
    if (end > have) this.memory.grow(Math.ceil((end - have) / PAGE_SIZE));
    this.refreshViews();
    return this.tableBasePtr;
  }
}

let crcCore: WasmCore | undefined;

/**
 * zlib CRC-32 of `bytes`, continuing from `seed` (0 to start); a u32, the
 * same as node:zlib's `crc32(bytes, seed)`. A view over a core's memory is
 * checksummed in place; other bytes are copied through a private core's
 * scratch window in 1 MiB pieces.
 *
 * @example
 * crc32(new TextEncoder().encode("123456789")) === 0xcbf43926
 */
export function crc32(bytes: Uint8Array, seed = 0): number {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`crc32: expected a Uint8Array, got ${describeValue(bytes)}`);
  const owner = coreByBuffer.get(bytes.buffer);
  if (owner !== undefined) {
    if (owner.u8.buffer !== bytes.buffer) {
      throw new TypeError("crc32: the view is over wasm memory that has since grown (detached); take a new view after the call that grew it");
    }
    return owner.crc32At(bytes.byteOffset, bytes.byteLength, seed);
  }
  return (crcCore ??= WasmCore.create()).crc32Of(bytes, seed);
}

/** A short description of a value for TypeError messages. */
export function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (typeof value !== "object") return typeof value;
  const name = (value as object).constructor?.name ?? "object";
  const length = (value as { length?: unknown }).length;
  return typeof length === "number" ? `${name} of length ${length}` : name;
}
