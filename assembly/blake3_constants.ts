// BLAKE3's constants (specification section 2.1): the IV, which is also the
// key of unkeyed hashing, and the domain flags of a compression.

export const IV0: u32 = 0x6a09e667;
export const IV1: u32 = 0xbb67ae85;
export const IV2: u32 = 0x3c6ef372;
export const IV3: u32 = 0xa54ff53a;
export const IV4: u32 = 0x510e527f;
export const IV5: u32 = 0x9b05688c;
export const IV6: u32 = 0x1f83d9ab;
export const IV7: u32 = 0x5be0cd19;

/** First block of a chunk. */
export const CHUNK_START: u32 = 1;
/** Last block of a chunk. */
export const CHUNK_END: u32 = 2;
/** A parent node: the block is two children's chaining values. */
export const PARENT: u32 = 4;
/** The root node: its output is the hash. */
export const ROOT: u32 = 8;

/** Bytes per chunk: a chunk is the tree's leaf, 16 blocks. */
export const CHUNK_LEN: usize = 1024;
/** Bytes per block: the compression function's input. */
export const BLOCK_LEN: usize = 64;
/** Bytes per chaining value (and per digest: segstore uses the 32-byte output only). */
export const OUT_LEN: usize = 32;
