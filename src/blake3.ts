/**
 * BLAKE3-256 in our own WebAssembly (assembly/blake3.ts): four 1 KiB chunks
 * hashed side by side in SIMD lanes. Blobs hash every byte they write, send
 * and verify, so the hash sets the pace of a blob transfer; this one runs
 * about twice as fast as hash-wasm's portable build (which the tests keep as
 * the reference to compare against).
 *
 * Each hasher is one instance of the module with its own small memory (the
 * state lives there). release() gives the instance to a pool, as creating
 * one costs 60-100 us and a content id of a small value about 1 us; a
 * hasher never released is collected like any object, so paths that hash
 * a whole blob per hasher need not bother.
 * The module's memory never grows, so the views made at creation stay valid.
 */
import { assert, BLOB_HASH_SIZE } from "./format.ts";
import { BLAKE3_DEBUG_BASE64, BLAKE3_RELEASE_BASE64 } from "./wasm_module.generated.ts";
import { base64Decode } from "./wasm.ts";

/**
 * Idle hashers kept for reuse, per build. Each holds about 330 KiB of wasm
 * memory; eight cover a server hashing a few uploads at once.
 */
const BLAKE3_POOL_MAX = 8;

/** The module's exports, as assembly/blake3.ts declares them. */
interface Blake3Exports {
  memory: WebAssembly.Memory;
  INPUT_PTR: WebAssembly.Global;
  INPUT_SIZE: WebAssembly.Global;
  OUT_PTR: WebAssembly.Global;
  PIECE_BYTES: WebAssembly.Global;
  reset(): void;
  update(newBytes: number): number;
  digest(): void;
  pieceCV(counter: bigint): void;
  pushPiece(): void;
}

let releaseModule: WebAssembly.Module | undefined;
let debugModule: WebAssembly.Module | undefined;

let releaseBytes: Uint8Array | undefined;
/** The release module's bytes (decoded once), for a hash thread to compile its own instance from. */
export function blake3ModuleBytes(): Uint8Array {
  return (releaseBytes ??= base64Decode(BLAKE3_RELEASE_BASE64));
}

function moduleOf(debug: boolean): WebAssembly.Module {
  if (debug) return (debugModule ??= new WebAssembly.Module(base64Decode(BLAKE3_DEBUG_BASE64) as BufferSource));
  return (releaseModule ??= new WebAssembly.Module(base64Decode(BLAKE3_RELEASE_BASE64) as BufferSource));
}

/** One instance of the module and the views over it, made once. */
export class HasherInstance {
  readonly exports: Blake3Exports;
  readonly memory: Uint8Array;
  readonly inputPtr: number;
  readonly inputSize: number;
  readonly outPtr: number;

  constructor(readonly debug: boolean) {
    const imports = {
      env: {
        abort(_message: number, _file: number, line: number, column: number): never {
          throw new Error(`segstore internal assertion: BLAKE3 wasm abort at assembly/blake3.ts:${line}:${column}`);
        },
      },
    };
    this.exports = new WebAssembly.Instance(moduleOf(debug), imports).exports as unknown as Blake3Exports;
    this.memory = new Uint8Array(this.exports.memory.buffer);
    this.inputPtr = this.exports.INPUT_PTR.value as number;
    this.inputSize = this.exports.INPUT_SIZE.value as number;
    this.outPtr = this.exports.OUT_PTR.value as number;
    assert(this.outPtr + BLOB_HASH_SIZE <= this.memory.length, "BLAKE3 module's output lies outside its memory");
  }
}

const pools = { release: [] as HasherInstance[], debug: [] as HasherInstance[] };

/** An instance from the pool, or a new one. */
export function hasherInstance(debug: boolean): HasherInstance {
  return (debug ? pools.debug : pools.release).pop() ?? new HasherInstance(debug);
}

/** Gives an instance back to the pool. */
export function hasherInstanceRelease(instance: HasherInstance): void {
  const pool = instance.debug ? pools.debug : pools.release;
  if (pool.length < BLAKE3_POOL_MAX) pool.push(instance);
}

/** Options of Blake3.create. */
export interface Blake3Options {
  /** Use the debug build (assertions on; for tests). Default false. */
  debug?: boolean;
}

/**
 * A BLAKE3-256 hasher over a stream of byte chunks of any sizes.
 *
 * @example
 * const hasher = Blake3.create();
 * hasher.update(firstChunk).update(secondChunk);
 * const digest = hasher.digest(); // 32 bytes
 * hasher.release();               // back to the pool; do not use it again
 */
export class Blake3 {
  #instance: HasherInstance | undefined;
  /** Bytes carried at the start of the input region (the last chunk's bytes so far). */
  #tail = 0;

  private constructor(instance: HasherInstance) {
    this.#instance = instance;
  }

  /** A fresh hasher (its instance from the pool when one is idle). */
  static create(options: Blake3Options = {}): Blake3 {
    const debug = options.debug === true;
    const hasher = new Blake3(hasherInstance(debug));
    hasher.init();
    return hasher;
  }

  #live(): HasherInstance {
    const instance = this.#instance;
    if (instance === undefined) throw new Error("segstore internal assertion: BLAKE3 hasher used after release()");
    return instance;
  }

  /** Forgets all input: the hasher starts over. */
  init(): this {
    this.#live().exports.reset();
    this.#tail = 0;
    return this;
  }

  /** Hashes `data` after everything before it. */
  update(data: Uint8Array): this {
    const { exports, memory, inputPtr, inputSize } = this.#live();
    let offset = 0;
    while (offset < data.length) {
      const n = Math.min(data.length - offset, inputSize - this.#tail);
      memory.set(n === data.length ? data : data.subarray(offset, offset + n), inputPtr + this.#tail);
      this.#tail = exports.update(n);
      offset += n;
    }
    return this;
  }

  /** The 32-byte hash of everything so far (a copy). More input may follow. */
  digest(): Uint8Array {
    const { exports, memory, outPtr } = this.#live();
    exports.digest();
    return memory.slice(outPtr, outPtr + BLOB_HASH_SIZE);
  }

  /** Gives the instance back to the pool; this hasher may not be used again. Safe to call twice. */
  release(): void {
    const instance = this.#instance;
    if (instance === undefined) return;
    this.#instance = undefined;
    hasherInstanceRelease(instance);
  }
}
