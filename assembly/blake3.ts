// BLAKE3-256 over a stream, four chunks at a time in wasm SIMD lanes.
//
// One instance of this module is one hasher (src/blake3.ts keeps a pool):
// all its state is in this module's globals and memory, so instances never
// share anything.
//
// The boundary: JS copies new bytes into INPUT at INPUT_PTR + the length
// update() last returned (the carried tail), calls update(n), and reads the
// new tail length back; digest() writes 32 bytes at OUT_PTR. The memory
// never grows, so JS views over it stay valid for the instance's life.
//
// Tree (specification section 2.1): 1 KiB chunks are leaves; a parent's
// input is its two children's chaining values. update() hashes every whole
// chunk it has except the last (the last chunk of the input may turn out to
// be the root, which needs the ROOT flag), in subtrees of 2^k chunks that
// start at a multiple of 2^k. Each subtree's chunks go through compress4
// four at a time, then its parents level by level, also four at a time, and
// its one chaining value is pushed on the stack. The stack keeps one value
// per set bit of the chunk count (merged as the count carries), so at the
// end the root is the carried tail folded with the stack top to bottom.
// The tail always holds at least one byte once any input arrived, so no
// value on the stack is ever the root.

import { compress, compress4 } from "./blake3_compress";
import { BLOCK_LEN, CHUNK_END, CHUNK_LEN, CHUNK_START, IV0, IV1, IV2, IV3, IV4, IV5, IV6, IV7, OUT_LEN, PARENT, ROOT } from "./blake3_constants";

/**
 * Chunks per subtree, at most. 256 chunks (256 KiB) keep the chaining
 * values of one subtree (8 KiB) in L1 while its parents are folded, and are
 * as many as one update() can take.
 */
const SUBTREE_CHUNKS_MAX: usize = 256;
/** Bytes of one piece (pieceCV): the largest subtree, hashed apart on another thread. */
export const PIECE_BYTES: usize = SUBTREE_CHUNKS_MAX * CHUNK_LEN;
/** New bytes one update() takes, at most: a whole number of subtrees. */
const INPUT_NEW_MAX: usize = SUBTREE_CHUNKS_MAX * CHUNK_LEN;
/**
 * Depth of the chaining value stack: one entry per bit of the chunk
 * counter. 54 levels cover 2^64 bytes, the most BLAKE3 defines.
 */
const STACK_DEPTH: usize = 54;

// @ts-ignore: decorator
@inline function alignUp(x: usize, to: usize): usize {
  return (x + to - 1) & ~(to - 1);
}

/** The input region: the carried tail (up to one chunk), then up to INPUT_NEW_MAX new bytes. */
export const INPUT_PTR: usize = alignUp(__heap_base, 64);
/** Bytes the input region holds: the tail and the new bytes together never pass it. */
export const INPUT_SIZE: usize = CHUNK_LEN + INPUT_NEW_MAX;
/** The digest: 32 bytes, written by digest(). */
export const OUT_PTR: usize = INPUT_PTR + INPUT_SIZE;
const KEY_PTR: usize = OUT_PTR + OUT_LEN;
const BLOCK_PTR: usize = KEY_PTR + OUT_LEN;
const CV_PTR: usize = BLOCK_PTR + BLOCK_LEN;
/** Chaining values of the subtree being hashed: 32 bytes per chunk, plus one lane group of slack. */
const SUBTREE_CVS_PTR: usize = CV_PTR + OUT_LEN;
const STACK_PTR: usize = SUBTREE_CVS_PTR + (SUBTREE_CHUNKS_MAX + 4) * OUT_LEN;
const MEMORY_END: usize = STACK_PTR + STACK_DEPTH * OUT_LEN;

/** Chunks hashed and pushed so far (the carried tail not counted). */
let chunkCounter: u64 = 0;
/** Chaining values on the stack. */
let stackLen: usize = 0;
/** Bytes carried at INPUT_PTR: the input's last bytes, 1..CHUNK_LEN once any input arrived. */
let tailLen: usize = 0;

function start(): void {
  const needed = (MEMORY_END + 65535) >> 16;
  const have = <usize>memory.size();
  if (needed > have) memory.grow(<i32>(needed - have));
  store<u32>(KEY_PTR, IV0, 0); store<u32>(KEY_PTR, IV1, 4); store<u32>(KEY_PTR, IV2, 8); store<u32>(KEY_PTR, IV3, 12);
  store<u32>(KEY_PTR, IV4, 16); store<u32>(KEY_PTR, IV5, 20); store<u32>(KEY_PTR, IV6, 24); store<u32>(KEY_PTR, IV7, 28);
}
start();

/** Forget all input: the hasher is fresh. */
export function reset(): void {
  chunkCounter = 0;
  stackLen = 0;
  tailLen = 0;
}

/**
 * Hashes the tail plus `newBytes` bytes that JS wrote at INPUT_PTR + tail,
 * keeping the last 1..1024 of them as the new tail, moved to INPUT_PTR.
 * Returns the new tail's length.
 */
export function update(newBytes: usize): usize {
  assert(newBytes <= INPUT_SIZE - tailLen, "blake3: more new bytes than the input region holds");
  const total = tailLen + newBytes;
  if (total == 0) return 0;
  const chunks = (total - 1) / CHUNK_LEN; // whole chunks with at least one byte after them
  let ptr = INPUT_PTR;
  let left = chunks;
  while (left > 0) {
    const size = subtreeSize(left);
    pushSubtree(ptr, size);
    ptr += size * CHUNK_LEN;
    left -= size;
  }
  tailLen = total - chunks * CHUNK_LEN;
  if (chunks > 0) memory.copy(INPUT_PTR, ptr, tailLen);
  return tailLen;
}

/**
 * A piece for another thread: the chaining value of the SUBTREE_CHUNKS_MAX
 * whole chunks (PIECE_BYTES) at INPUT_PTR, as the subtree that starts at
 * chunk `counter`, written at OUT_PTR. Touches no state: any instance can
 * hash any piece, and pushPiece adds the results in order.
 */
export function pieceCV(counter: u64): void {
  assert(counter % <u64>SUBTREE_CHUNKS_MAX == 0, "blake3: a piece starts at a multiple of its size");
  subtreeCV(INPUT_PTR, SUBTREE_CHUNKS_MAX, counter);
  memory.copy(OUT_PTR, SUBTREE_CVS_PTR, OUT_LEN);
}

/**
 * Adds the chaining value at OUT_PTR (from pieceCV) as the next piece of
 * the input, as if its PIECE_BYTES had gone through update(). Only at a
 * piece boundary with nothing carried: the pieces come first, in order, and
 * the rest of the input (at least one byte) through update() after them.
 */
export function pushPiece(): void {
  assert(tailLen == 0 && chunkCounter % <u64>SUBTREE_CHUNKS_MAX == 0, "blake3: pushPiece only at a piece boundary");
  memory.copy(SUBTREE_CVS_PTR, OUT_PTR, OUT_LEN);
  pushCV(SUBTREE_CHUNKS_MAX);
}

/** Writes the 32-byte hash of all input so far at OUT_PTR. The state is kept: more input may follow. */
export function digest(): void {
  if (stackLen == 0) {
    chunkOutput(INPUT_PTR, tailLen, chunkCounter, ROOT, OUT_PTR);
    return;
  }
  chunkOutput(INPUT_PTR, tailLen, chunkCounter, 0, CV_PTR);
  for (let i = <isize>stackLen - 1; i >= 0; i--) {
    memory.copy(BLOCK_PTR, STACK_PTR + <usize>i * OUT_LEN, OUT_LEN);
    memory.copy(BLOCK_PTR + OUT_LEN, CV_PTR, OUT_LEN);
    compress(KEY_PTR, BLOCK_PTR, 0, <u32>BLOCK_LEN, i == 0 ? PARENT | ROOT : PARENT, i == 0 ? OUT_PTR : CV_PTR);
  }
}

/** The largest subtree that may start at chunkCounter: a power of two, aligned to it, at most `left` and the limit. */
function subtreeSize(left: usize): usize {
  let size: usize = SUBTREE_CHUNKS_MAX;
  if (chunkCounter != 0) {
    const alignment = chunkCounter & (~chunkCounter + 1);
    if (alignment < <u64>size) size = <usize>alignment;
  }
  while (size > left) size >>= 1;
  return size;
}

/** Hashes `size` whole chunks at `ptr` (a subtree at chunkCounter) and pushes its chaining value. */
function pushSubtree(ptr: usize, size: usize): void {
  subtreeCV(ptr, size, chunkCounter);
  pushCV(size);
}

/** The chaining value of the `size` whole chunks at `ptr`, a subtree starting at chunk `counter`, to SUBTREE_CVS_PTR. */
function subtreeCV(ptr: usize, size: usize, counter: u64): void {
  if (size == 1) {
    chunkOutput(ptr, CHUNK_LEN, counter, 0, SUBTREE_CVS_PTR);
  } else {
    // Leaves, four per call. With two chunks, lanes 2 and 3 repeat them
    // (their results land in the slack and are never read).
    for (let i: usize = 0; i < size; i += 4) {
      const p = ptr + i * CHUNK_LEN;
      const p2 = size == 2 ? p : p + 2 * CHUNK_LEN;
      compress4(p, p + CHUNK_LEN, p2, p2 + CHUNK_LEN, 16, counter + <u64>i, 1, 0, CHUNK_START, CHUNK_END, SUBTREE_CVS_PTR + i * OUT_LEN);
    }
    // Parents, level by level, in place: group g reads 256 bytes at g*256
    // and writes 128 at g*128, after every read of its own input, and later
    // groups read beyond what earlier groups wrote.
    let n = size;
    while (n > 1) {
      const parents = n >> 1;
      if (parents == 1) {
        compress(KEY_PTR, SUBTREE_CVS_PTR, 0, <u32>BLOCK_LEN, PARENT, SUBTREE_CVS_PTR);
      } else {
        for (let g: usize = 0; g < parents; g += 4) {
          const p = SUBTREE_CVS_PTR + g * 2 * OUT_LEN;
          const p2 = parents == 2 ? p : p + 4 * OUT_LEN;
          compress4(p, p + 2 * OUT_LEN, p2, p2 + 2 * OUT_LEN, 1, 0, 0, PARENT, 0, 0, SUBTREE_CVS_PTR + g * OUT_LEN);
        }
      }
      n = parents;
    }
  }
}

/** Pushes the chaining value at SUBTREE_CVS_PTR, a subtree of `size` chunks at chunkCounter. */
function pushCV(size: usize): void {
  // Push, then merge while the stack has more entries than the new chunk
  // count has set bits: each merge is a carry in the count.
  assert(stackLen < STACK_DEPTH, "blake3: chaining value stack overflow");
  memory.copy(STACK_PTR + stackLen * OUT_LEN, SUBTREE_CVS_PTR, OUT_LEN);
  stackLen++;
  chunkCounter += <u64>size;
  const keep = <usize>popcnt<u64>(chunkCounter);
  while (stackLen > keep) {
    const left = STACK_PTR + (stackLen - 2) * OUT_LEN; // left and right are adjacent: one 64-byte block
    compress(KEY_PTR, left, 0, <u32>BLOCK_LEN, PARENT, left);
    stackLen--;
  }
}

/**
 * The chaining value (or, with ROOT in `rootFlag`, the hash) of one chunk of
 * `len` bytes at `ptr` (0..1024; 0 only for the empty input), to `out`.
 */
function chunkOutput(ptr: usize, len: usize, counter: u64, rootFlag: u32, out: usize): void {
  assert(len <= CHUNK_LEN, "blake3: chunk longer than 1024 bytes");
  memory.copy(CV_PTR, KEY_PTR, OUT_LEN);
  const blocks: usize = len == 0 ? 1 : (len + BLOCK_LEN - 1) / BLOCK_LEN;
  for (let b: usize = 0; b < blocks; b++) {
    const offset = b * BLOCK_LEN;
    const blockLen = min(len - offset, BLOCK_LEN);
    let block = ptr + offset;
    if (blockLen < BLOCK_LEN) {
      // The last block is zero-padded to 64 bytes; its length goes in the counter word.
      memory.fill(BLOCK_PTR, 0, BLOCK_LEN);
      memory.copy(BLOCK_PTR, block, blockLen);
      block = BLOCK_PTR;
    }
    let flags: u32 = 0;
    if (b == 0) flags |= CHUNK_START;
    if (b == blocks - 1) flags |= CHUNK_END | rootFlag;
    compress(CV_PTR, block, counter, <u32>blockLen, flags, b == blocks - 1 ? out : CV_PTR);
  }
}
