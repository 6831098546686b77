/**
 * ValueSlab: hands out the Uint8Arrays that get() and getMany() return.
 *
 * A value read from a segment lies in wasm memory, where the next read
 * overwrites it, so every get copies it out. For small values the copy
 * costs little; the allocation of a fresh ArrayBuffer costs more than the
 * pread itself (V8 allocates typed arrays over 64 bytes off the heap: about
 * 1 µs each, against 0.4 µs for a copy into a slab). So small values are
 * copied into a shared slab and returned as views of it, as Node's Buffer
 * pool does. Each view is the value's alone: the slab is never written
 * again where a view was handed out. A view's `.buffer` is the whole slab,
 * which lives as long as any of its views (at most SLAB_BYTES per retained
 * value); `value.slice()` gives a value of its own buffer.
 */
import { assert } from "./format.ts";

/** Bytes of one slab: Node's Buffer.poolSize, so a retained small value pins no more than a Buffer does. */
export const SLAB_BYTES = 8 * 1024;
/** Largest value copied into a slab; larger ones get their own buffer (the allocation is small next to the copy). */
export const SLAB_VALUE_MAX = 1024;
/** Views start on 8-byte boundaries, so a caller may lay a Float64Array or BigUint64Array over a value's bytes. */
const SLAB_ALIGN = 8;

export class ValueSlab {
  private slab = new Uint8Array(SLAB_BYTES);
  private used = 0;

  /**
   * A copy of `source[start, end)` that no later call overwrites.
   *
   * @example
   * const value = slab.copy(core.u8, ptr + PUT_HEADER_SIZE, ptr + size);
   */
  copy(source: Uint8Array, start: number, end: number): Uint8Array {
    const length = end - start;
    assert(length >= 0 && end <= source.length, "slab copy range inside its source");
    if (length > SLAB_VALUE_MAX) return source.slice(start, end);
    if (this.used + length > SLAB_BYTES) {
      this.slab = new Uint8Array(SLAB_BYTES);
      this.used = 0;
    }
    const at = this.used;
    this.slab.set(source.subarray(start, end), at);
    this.used = (at + length + SLAB_ALIGN - 1) & ~(SLAB_ALIGN - 1);
    return this.slab.subarray(at, at + length);
  }
}
