// The module's memory layout: where each fixed region lies, and the small
// blocks JavaScript reads to learn it. src/wasm.ts reads the layout block
// once per instance; nothing else on the JS side restates an offset.
//
// Map of linear memory (byte offsets; every big region 64 KiB aligned):
//
//   [0, __heap_base)        static data: CRC tables, the layout block, the
//                           table state block (memory.data below)
//   KEY                     32 bytes: the key of single-key table calls
//   BATCH_KEYS              BATCH_MAX keys of 32 bytes (lookupMany/setMany)
//   BATCH_VALUES            BATCH_MAX values of 3 u32 (setMany)
//   BATCH_RESULTS           BATCH_MAX i32 results (lookupMany)
//   READ_BUF                READ_BUF_SIZE bytes: records read from segments
//   WRITE_BUF               WRITE_BUF_SIZE bytes: records being appended
//   TABLE_BASE ... end      the hash table (hashtable.ts): packed entries,
//                           then the slot array; grows with memory.grow
//
// The fixed regions are reserved at instantiation (the start function grows
// memory to TABLE_BASE). Untouched pages cost address space, not RAM.

/** Size of a key: ids are 32-byte hashes (src/format.ts KEY_SIZE). */
export const KEY_SIZE: usize = 32;
/** Bytes per wasm page. */
export const PAGE_SIZE: usize = 65536;
/** Largest memory a wasm32 module can have: 65536 pages = 4 GiB. */
export const MEMORY_PAGES_MAX: u64 = 65536;
/**
 * Keys per lookupMany/setMany call. 4096 keys (128 KiB) amortise the call
 * from JS to nothing while the batch stays in L2.
 */
export const BATCH_MAX: usize = 4096;
/**
 * Largest record is PUT header 41 + MAX_OBJECT_SIZE 16 MiB (src/format.ts);
 * the read buffer holds one whole, rounded up to 64 KiB. src/wasm.ts checks
 * this against MAX_RECORD_SIZE at load.
 */
export const READ_BUF_SIZE: usize = 16 * 1024 * 1024 + 65536;
/** One largest record plus 1 MiB of small records batched behind it (checked in src/wasm.ts). */
export const WRITE_BUF_SIZE: usize = 17 * 1024 * 1024 + 65536;

/**
 * Version of the hash table's layout: entry size and field order, slot
 * encoding and the hash function. A checkpoint records it; bump it whenever
 * any of those change, so an older checkpoint is rebuilt from the log
 * instead of misread.
 */
export const TABLE_LAYOUT_VERSION: u32 = 1;

// @ts-ignore: decorator
@inline function alignUp(x: usize, to: usize): usize {
  return (x + to - 1) & ~(to - 1);
}

export const KEY_PTR: usize = alignUp(__heap_base, PAGE_SIZE);
export const BATCH_KEYS_PTR: usize = KEY_PTR + 64;
export const BATCH_VALUES_PTR: usize = BATCH_KEYS_PTR + BATCH_MAX * KEY_SIZE;
export const BATCH_RESULTS_PTR: usize = BATCH_VALUES_PTR + BATCH_MAX * 12;
export const READ_BUF_PTR: usize = alignUp(BATCH_RESULTS_PTR + BATCH_MAX * 4, PAGE_SIZE);
export const WRITE_BUF_PTR: usize = READ_BUF_PTR + READ_BUF_SIZE;
/** First byte of the hash table: the entries array starts here. */
export const TABLE_BASE: usize = alignUp(WRITE_BUF_PTR + WRITE_BUF_SIZE, PAGE_SIZE);

/**
 * A hash table entry, packed: key[32] | segment u32 @32 | offset u32 @36 |
 * size u32 @40. 44 bytes, a multiple of 4 so u32 fields stay aligned.
 */
export const ENTRY_SIZE: usize = 44;
export const ENTRY_SEGMENT: usize = 32;
export const ENTRY_OFFSET: usize = 36;
export const ENTRY_SIZE_FIELD: usize = 40;

/**
 * The table's state block: u32 fields JS reads after a table call instead
 * of asking for each. Field offsets (bytes): count 0, entry capacity 4,
 * slots pointer 8, slot count 12, old segment 16, old offset 20, old size 24.
 */
export const STATE_BLOCK: usize = memory.data(64, 16);
export const STATE_COUNT: usize = 0;
export const STATE_CAPACITY: usize = 4;
export const STATE_SLOTS_PTR: usize = 8;
export const STATE_SLOT_COUNT: usize = 12;
export const STATE_OLD_SEGMENT: usize = 16;
export const STATE_OLD_OFFSET: usize = 20;
export const STATE_OLD_SIZE: usize = 24;

/**
 * Makes memory reach `end` (exclusive), growing it if needed. Returns false
 * when that would pass 4 GiB or the host refuses to grow.
 */
export function memoryEnsure(end: u64): bool {
  const have = (<u64>memory.size()) << 16;
  if (end <= have) return true;
  const pagesNeeded = (end - have + <u64>PAGE_SIZE - 1) >> 16;
  if ((<u64>memory.size()) + pagesNeeded > MEMORY_PAGES_MAX) return false;
  return memory.grow(<i32>pagesNeeded) >= 0;
}

/** Byte size of memory, as u64 (4 GiB does not fit a u32). */
// @ts-ignore: decorator
@inline export function memoryEnd(): u64 {
  return (<u64>memory.size()) << 16;
}

/** True when [ptr, ptr+len) lies inside memory; used by the debug build's assertions. */
// @ts-ignore: decorator
@inline export function memoryHas(ptr: usize, len: usize): bool {
  return <u64>ptr + <u64>len <= memoryEnd();
}

// Field numbers of the layout block (u32 each), read once by src/wasm.ts.
const LAYOUT_FIELDS = 16;
const LAYOUT_BLOCK: usize = memory.data(LAYOUT_FIELDS * 4, 16);

/**
 * Fills and returns the layout block: u32 fields, in order, layout version,
 * debug flag, key, batch keys, batch max, batch values, batch results, read
 * buffer and size, write buffer and size, table base, entry size, state
 * block. The order is the contract with src/wasm.ts (LAYOUT_* there).
 */
export function layoutDescribe(): usize {
  store<u32>(LAYOUT_BLOCK, TABLE_LAYOUT_VERSION, 0);
  store<u32>(LAYOUT_BLOCK, ASC_NO_ASSERT ? 0 : 1, 4);
  store<u32>(LAYOUT_BLOCK, <u32>KEY_PTR, 8);
  store<u32>(LAYOUT_BLOCK, <u32>BATCH_KEYS_PTR, 12);
  store<u32>(LAYOUT_BLOCK, <u32>BATCH_MAX, 16);
  store<u32>(LAYOUT_BLOCK, <u32>BATCH_VALUES_PTR, 20);
  store<u32>(LAYOUT_BLOCK, <u32>BATCH_RESULTS_PTR, 24);
  store<u32>(LAYOUT_BLOCK, <u32>READ_BUF_PTR, 28);
  store<u32>(LAYOUT_BLOCK, <u32>READ_BUF_SIZE, 32);
  store<u32>(LAYOUT_BLOCK, <u32>WRITE_BUF_PTR, 36);
  store<u32>(LAYOUT_BLOCK, <u32>WRITE_BUF_SIZE, 40);
  store<u32>(LAYOUT_BLOCK, <u32>TABLE_BASE, 44);
  store<u32>(LAYOUT_BLOCK, <u32>ENTRY_SIZE, 48);
  store<u32>(LAYOUT_BLOCK, <u32>STATE_BLOCK, 52);
  return LAYOUT_BLOCK;
}

// Reserve the fixed regions at instantiation. A failure here (the host
// refusing ~34 MiB of address space) traps, which the loader reports.
if (!memoryEnsure(<u64>TABLE_BASE)) unreachable();
