/**
 * BlockCache: committed segment bytes kept in memory, in aligned blocks,
 * so a get of a hot record costs a copy instead of a pread.
 *
 * A get is one hash lookup in wasm and one pread; the pread (a syscall,
 * about 1.7 µs) is most of it. LMDB answers from its memory map and
 * LevelDB from its block cache, so both skip the syscall on hot data; this
 * is segstore's equivalent. Blocks are READ_CACHE_BLOCK bytes (small, so a
 * miss costs about what the record's own pread would) and only ever hold
 * committed bytes: the store passes, with each read, the limit below which
 * the segment's bytes are committed. Committed bytes never change (a
 * rollback truncates only what lies past the last commit), and a segment
 * that held commits is only ever deleted, never recreated under its number,
 * so a block cannot go stale; SegmentFiles.evict still drops a segment's
 * blocks when it is truncated or deleted (to free them, and in case those
 * rules ever loosen), and repair, which rewrites the log, clears the cache.
 *
 * Memory is taken in arena chunks as the cache fills, up to its capacity;
 * when full, the CLOCK algorithm picks the block to reuse (a hit sets the
 * block's reference bit; the hand clears bits until it finds a block
 * without one), so a hit costs no list shuffling.
 *
 * Records larger than a block, or crossing a block boundary, are read from
 * the file directly (the caller's fallback).
 */
import type { File } from "./fs.ts";
import { assert } from "./format.ts";

/** Bytes of one cached block: a page, so a miss reads one page, as the record's own pread would touch. */
export const READ_CACHE_BLOCK = 4096;
/** Default cache size per store: RocksDB's default block cache. `open(path, { readCacheBytes })` changes it. */
export const READ_CACHE_BYTES_DEFAULT = 32 * 1024 * 1024;
/** Largest cache a store may ask for (the arena is JS memory, beside the OS page cache). */
export const READ_CACHE_BYTES_MAX = 4 * 1024 * 1024 * 1024;
/** Blocks per arena allocation: 1 MiB at a time, so a small store never pays for the whole capacity. */
const ARENA_CHUNK_BLOCKS = 256;
/** Block numbers per segment in a cache key: segments are under 4 GiB, so under 2^20 blocks. */
const BLOCKS_PER_SEGMENT = 2 ** 20;
/** Segment sizes are bounded below 4 GiB (format.ts), which keeps keys exact doubles. */
const SEGMENT_BYTES_MAX = READ_CACHE_BLOCK * BLOCKS_PER_SEGMENT;

export class BlockCache {
  /** Blocks the cache may hold. */
  readonly capacity: number;
  /** Cache key (segment * 2^20 + block) → slot. */
  private readonly slotOf = new Map<number, number>();
  /** Per slot: its key (-1 when free), its valid bytes, its reference bit, its bytes. */
  private keys: Float64Array;
  private valid: Int32Array;
  private ref: Uint8Array;
  private readonly views: Uint8Array[] = [];
  /** Slots given back by drops, reused before the arena grows or the clock runs. */
  private readonly free: number[] = [];
  private hand = 0;
  /** Reads served from memory, and blocks read from files (for tests and tuning readCacheBytes). */
  hits = 0;
  misses = 0;

  constructor(bytes: number) {
    assert(Number.isSafeInteger(bytes) && bytes >= 0 && bytes <= READ_CACHE_BYTES_MAX, `read cache of ${bytes} bytes`);
    this.capacity = Math.floor(bytes / READ_CACHE_BLOCK);
    this.keys = new Float64Array(0);
    this.valid = new Int32Array(0);
    this.ref = new Uint8Array(0);
  }

  /** Bytes of memory the cache has taken so far. */
  get bytes(): number {
    return this.views.length * READ_CACHE_BLOCK;
  }

  /**
   * Copies bytes [offset, offset + size) of `segment` into `dest` at
   * `destAt` when they lie inside one block and below `limit` (the end of
   * the segment's committed bytes), reading the block from `file` on a
   * miss. Returns false when the cache cannot serve the read (too large,
   * across blocks, past the limit, or the file was short there): the caller
   * reads the file itself. Errors of `file.read` propagate.
   *
   * @example
   * if (!cache.read(file, 3, offset, size, committedEnd, core.u8, readBufPtr)) file.read(view, offset);
   */
  read(file: File, segment: number, offset: number, size: number, limit: number, dest: Uint8Array, destAt: number): boolean {
    if (this.capacity === 0) return false;
    const end = offset + size;
    const block = Math.floor(offset / READ_CACHE_BLOCK);
    const start = block * READ_CACHE_BLOCK;
    if (end > start + READ_CACHE_BLOCK || end > limit || limit > SEGMENT_BYTES_MAX) return false;
    const key = segment * BLOCKS_PER_SEGMENT + block;
    let slot = this.slotOf.get(key);
    if (slot === undefined) {
      slot = this.claim(key);
      this.fill(file, slot, start, limit);
    } else if (this.valid[slot]! < end - start) {
      this.fill(file, slot, start, limit); // the segment grew since the block was read
    } else {
      this.hits++;
    }
    if (this.valid[slot]! < end - start) return false;
    this.ref[slot] = 1;
    dest.set(this.views[slot]!.subarray(offset - start, end - start), destAt);
    return true;
  }

  /** Forgets every block of `segment` (before it is truncated or deleted). */
  dropSegment(segment: number): void {
    if (this.slotOf.size === 0) return;
    for (const [key, slot] of this.slotOf) {
      if (Math.floor(key / BLOCKS_PER_SEGMENT) !== segment) continue;
      this.slotOf.delete(key);
      this.release(slot);
    }
  }

  /** Forgets every block (the store closes, or repair rewrote the log); keeps the arena for reuse. */
  clear(): void {
    for (const slot of this.slotOf.values()) this.release(slot);
    this.slotOf.clear();
  }

  private release(slot: number): void {
    this.keys[slot] = -1;
    this.valid[slot] = 0;
    this.ref[slot] = 0;
    this.free.push(slot);
  }

  /** A slot for `key`: a free one, a new one from the arena, or the clock's victim. */
  private claim(key: number): number {
    let slot = this.free.pop();
    if (slot === undefined && this.views.length < this.capacity) slot = this.grow();
    if (slot === undefined) {
      const used = this.views.length;
      while (this.ref[this.hand] === 1) {
        this.ref[this.hand] = 0;
        this.hand = (this.hand + 1) % used;
      }
      slot = this.hand;
      this.hand = (this.hand + 1) % used;
      this.slotOf.delete(this.keys[slot]!);
    }
    this.keys[slot] = key;
    this.valid[slot] = 0;
    this.slotOf.set(key, slot);
    return slot;
  }

  /** Adds an arena chunk's slots (all but the first to the free list) and returns the first. */
  private grow(): number {
    const first = this.views.length;
    const count = Math.min(ARENA_CHUNK_BLOCKS, this.capacity - first);
    assert(count > 0, "read cache grows only below capacity");
    const arena = new Uint8Array(count * READ_CACHE_BLOCK);
    for (let i = 0; i < count; i++) this.views.push(arena.subarray(i * READ_CACHE_BLOCK, (i + 1) * READ_CACHE_BLOCK));
    const keys = new Float64Array(this.views.length).fill(-1);
    keys.set(this.keys);
    this.keys = keys;
    const valid = new Int32Array(this.views.length);
    valid.set(this.valid);
    this.valid = valid;
    const ref = new Uint8Array(this.views.length);
    ref.set(this.ref);
    this.ref = ref;
    for (let i = first + count - 1; i > first; i--) this.free.push(i);
    return first;
  }

  private fill(file: File, slot: number, start: number, limit: number): void {
    this.misses++;
    const want = Math.min(READ_CACHE_BLOCK, limit - start);
    // A failed read leaves the slot holding nothing valid, never stale bytes.
    this.valid[slot] = 0;
    this.valid[slot] = file.read(this.views[slot]!.subarray(0, want), start);
  }
}
