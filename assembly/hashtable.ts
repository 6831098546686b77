// The key index's hash table: open addressing (linear probing) over a small
// slot array, pointing into a dense array of packed entries.
//
//   TABLE_BASE                                   slots
//   | entry 0 | entry 1 | ... | entry cap-1 | pad | slot 0 | ... | slot S-1 |
//     44 B each: key, segment, offset, size         u32 each
//
// Invariants (asserted in the debug build):
//  1. Entries [0, count) are live and distinct; entries [count, cap) are unused.
//  2. Every live entry e is referenced by exactly one slot, holding
//     tag(hash(key)) << 27 | (e + 1); every other slot is 0 (empty).
//  3. A live key's slot is reachable from its home slot by a run of
//     non-empty slots (linear probing without tombstones).
//  4. count <= S * 4/5 (load factor <= 0.8), so a probe always ends.
//
// Delete keeps the arrays dense: backward-shift deletion in the slots (no
// tombstones), then the last entry moves into the hole and its slot is
// re-pointed. So iteration is a walk over [0, count) and a checkpoint is the
// two arrays as they lie. Growth: entries by 1.25x (the slot array moves up
// by a memmove), slots by 2x (rebuilt from the entries, which never move).
//
// Slot encoding: the low 27 bits hold entry + 1 (0 = empty), the high 5 bits
// a tag from the hash, so 31 in 32 probes past a wrong slot skip the key
// compare (a cache miss into the entries array).

import {
  ENTRY_OFFSET, ENTRY_SEGMENT, ENTRY_SIZE, ENTRY_SIZE_FIELD, KEY_PTR, BATCH_KEYS_PTR, BATCH_VALUES_PTR,
  BATCH_RESULTS_PTR, BATCH_MAX, STATE_BLOCK, STATE_CAPACITY, STATE_COUNT, STATE_OLD_OFFSET, STATE_OLD_SEGMENT,
  STATE_OLD_SIZE, STATE_SLOTS_PTR, STATE_SLOT_COUNT, TABLE_BASE, memoryEnsure, memoryHas,
} from "./layout";

const ENTRY_BITS: u32 = 27;
const ENTRY_MASK: u32 = (1 << ENTRY_BITS) - 1;
const TAG_MASK: u32 = ~ENTRY_MASK;
/** entry + 1 must fit ENTRY_BITS; 4 GiB of memory runs out first (~97M entries). */
const ENTRIES_MAX: u32 = ENTRY_MASK - 1;
/** Smallest entry capacity, and the least an entry growth adds: keeps tiny tables from growing per insert. */
const ENTRIES_MIN: u32 = 1024;
/** Smallest slot array: 2^11 slots hold ENTRIES_MIN at load 0.5. */
const SLOT_BITS_MIN: u32 = 11;
/** Largest slot array: 2^30 u32 = 4 GiB, unreachable in wasm32 but bounds the shift. */
const SLOT_BITS_MAX: u32 = 30;
/** Slots are 64-byte aligned: one cache line holds 16 of them. */
const SLOTS_ALIGN: u64 = 64;
/** Entries a checkpoint load verifies by lookup: a cheap check that the hash function is the writer's. */
const VERIFY_SAMPLES: u32 = 4096;

// Table state. Mirrored into STATE_BLOCK by stateSync() after each call.
let count: u32 = 0;
let cap: u32 = 0;
let slots: usize = 0;
let slotBits: u32 = 0;
let mask: u32 = 0;
let shift: u64 = 64;
let probeSlot: u32 = 0;
let oldSegment: u32 = 0;
let oldOffset: u32 = 0;
let oldSize: u32 = 0;

function stateSync(): void {
  store<u32>(STATE_BLOCK, count, STATE_COUNT);
  store<u32>(STATE_BLOCK, cap, STATE_CAPACITY);
  store<u32>(STATE_BLOCK, <u32>slots, STATE_SLOTS_PTR);
  store<u32>(STATE_BLOCK, slotBits == 0 ? 0 : <u32>1 << slotBits, STATE_SLOT_COUNT);
  store<u32>(STATE_BLOCK, oldSegment, STATE_OLD_SEGMENT);
  store<u32>(STATE_BLOCK, oldOffset, STATE_OLD_OFFSET);
  store<u32>(STATE_BLOCK, oldSize, STATE_OLD_SIZE);
}

// @ts-ignore: decorator
@inline function entryPtr(e: u32): usize {
  assert(e < cap, "entry number past the entries array");
  return TABLE_BASE + <usize>e * ENTRY_SIZE;
}

// @ts-ignore: decorator
@inline function slotPtr(i: u32): usize {
  assert(i <= mask, "slot number past the slot array");
  return slots + (<usize>i << 2);
}

/**
 * The hash of a key. Ids are hashes already, but a user may pick counters
 * or padded names as ids: folding all 32 bytes and mixing (murmur3's
 * finalizer) keeps those from piling into one run. Part of the layout
 * version (layout.ts TABLE_LAYOUT_VERSION).
 */
// @ts-ignore: decorator
@inline function hashOf(k: usize): u64 {
  let h = load<u64>(k) ^ rotr<u64>(load<u64>(k, 8), 16) ^ rotr<u64>(load<u64>(k, 16), 32) ^
    rotr<u64>(load<u64>(k, 24), 48);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccd;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53;
  h ^= h >> 33;
  return h;
}

/** Home slot: the top slotBits bits of the hash. */
// @ts-ignore: decorator
@inline function homeOf(h: u64): u32 {
  return <u32>(h >> shift);
}

/** The tag in a slot's top 5 bits: the hash's low bits, disjoint from the home bits. */
// @ts-ignore: decorator
@inline function tagOf(h: u64): u32 {
  return (<u32>h) << ENTRY_BITS;
}

// @ts-ignore: decorator
@inline function keyEquals(a: usize, b: usize): bool {
  return ((load<u64>(a) ^ load<u64>(b)) | (load<u64>(a, 8) ^ load<u64>(b, 8)) |
    (load<u64>(a, 16) ^ load<u64>(b, 16)) | (load<u64>(a, 24) ^ load<u64>(b, 24))) == 0;
}

/**
 * The entry holding `key`, or -1. Either way probeSlot is left at the
 * key's slot or at the empty slot that ends its run (where it would go).
 */
function probe(key: usize, h: u64): i32 {
  let i = homeOf(h);
  const tag = tagOf(h);
  while (true) {
    assert(i <= mask);
    const s = load<u32>(slotPtr(i));
    if (s == 0) {
      probeSlot = i;
      return -1;
    }
    if ((s & TAG_MASK) == tag) {
      const e = (s & ENTRY_MASK) - 1;
      assert(e < count, "probe: slot points past the live entries");
      if (keyEquals(entryPtr(e), key)) {
        probeSlot = i;
        return <i32>e;
      }
    }
    i = (i + 1) & mask;
  }
}

/** Points an empty slot in entry e's run at it (slot rebuild and insert). */
function slotInsertEntry(e: u32): void {
  const h = hashOf(entryPtr(e));
  let i = homeOf(h);
  while (load<u32>(slotPtr(i)) != 0) i = (i + 1) & mask;
  store<u32>(slotPtr(i), tagOf(h) | (e + 1));
}

function slotBitsSet(bits: u32): void {
  assert(bits >= SLOT_BITS_MIN && bits <= SLOT_BITS_MAX);
  slotBits = bits;
  mask = (<u32>1 << bits) - 1;
  shift = <u64>(64 - bits);
}

/** Entry capacity x1.25 (at least +ENTRIES_MIN); the slot array moves up. False when memory runs out. */
function entriesGrow(): bool {
  let grown = <u64>cap + max<u64>(<u64>cap >> 2, <u64>ENTRIES_MIN);
  if (grown > <u64>ENTRIES_MAX) grown = <u64>ENTRIES_MAX;
  if (grown <= <u64>cap) return false;
  const slotsNew = (<u64>TABLE_BASE + grown * <u64>ENTRY_SIZE + SLOTS_ALIGN - 1) & ~(SLOTS_ALIGN - 1);
  const slotsBytes = <u64>(mask + 1) << 2;
  if (!memoryEnsure(slotsNew + slotsBytes)) return false;
  memory.copy(<usize>slotsNew, slots, <usize>slotsBytes);
  slots = <usize>slotsNew;
  cap = <u32>grown;
  return true;
}

/** Slot count x2, rebuilt from the entries. False when memory runs out. */
function slotsDouble(): bool {
  if (slotBits >= SLOT_BITS_MAX) return false;
  const bytes = <u64>1 << (<u64>slotBits + 3);
  if (!memoryEnsure(<u64>slots + bytes)) return false;
  memory.fill(slots, 0, <usize>bytes);
  slotBitsSet(slotBits + 1);
  for (let e: u32 = 0; e < count; e++) slotInsertEntry(e);
  return true;
}

/** True when one more entry keeps the load factor <= 0.8. */
// @ts-ignore: decorator
@inline function loadAllows(n: u64): bool {
  return n * 5 <= (<u64>(mask + 1)) * 4;
}

/** Smallest slot bits holding n entries at load <= 0.8. */
function slotBitsFor(n: u64): u32 {
  let bits = SLOT_BITS_MIN;
  while (bits < SLOT_BITS_MAX && n * 5 > (<u64>1 << bits) * 4) bits++;
  return bits;
}

/**
 * Empties the table and sizes it for `capacityHint` entries. Returns 0, or
 * -1 when the memory that needs is more than wasm32 can have.
 */
export function tableInit(capacityHint: u32): i32 {
  const want = max<u32>(capacityHint, ENTRIES_MIN);
  if (want > ENTRIES_MAX) return -1;
  const bits = slotBitsFor(<u64>want);
  const slotsAt = (<u64>TABLE_BASE + <u64>want * <u64>ENTRY_SIZE + SLOTS_ALIGN - 1) & ~(SLOTS_ALIGN - 1);
  if (!memoryEnsure(slotsAt + (<u64>4 << <u64>bits))) return -1;
  slots = <usize>slotsAt;
  cap = want;
  count = 0;
  slotBitsSet(bits);
  memory.fill(slots, 0, <usize>4 << bits);
  stateSync();
  return 0;
}

/** Empties the table, keeping its size. */
export function tableClear(): void {
  assert(slotBits != 0, "table used before tableInit");
  count = 0;
  memory.fill(slots, 0, <usize>(mask + 1) << 2);
  stateSync();
}

/** The entry of the key at KEY_PTR, or -1. */
export function tableLookup(): i32 {
  assert(slotBits != 0, "table used before tableInit");
  return probe(KEY_PTR, hashOf(KEY_PTR));
}

/** Insert or update the key at `key`: 1 replaced (old value in the state block), 0 inserted, -1 out of memory. */
function setAt(key: usize, segment: u32, offset: u32, size: u32): i32 {
  const h = hashOf(key);
  const found = probe(key, h);
  if (found >= 0) {
    const p = entryPtr(<u32>found);
    oldSegment = load<u32>(p, ENTRY_SEGMENT);
    oldOffset = load<u32>(p, ENTRY_OFFSET);
    oldSize = load<u32>(p, ENTRY_SIZE_FIELD);
    store<u32>(p, segment, ENTRY_SEGMENT);
    store<u32>(p, offset, ENTRY_OFFSET);
    store<u32>(p, size, ENTRY_SIZE_FIELD);
    return 1;
  }
  // Growing the entries moves the slot array but keeps slot numbers, so
  // probeSlot stays right; doubling the slots re-probes.
  if (count == cap && !entriesGrow()) return -1;
  if (!loadAllows(<u64>count + 1)) {
    if (!slotsDouble()) return -1;
    probe(key, h);
  }
  const e = count;
  const p = entryPtr(e);
  assert(memoryHas(p, ENTRY_SIZE) && p + ENTRY_SIZE <= slots);
  memory.copy(p, key, 32);
  store<u32>(p, segment, ENTRY_SEGMENT);
  store<u32>(p, offset, ENTRY_OFFSET);
  store<u32>(p, size, ENTRY_SIZE_FIELD);
  assert(load<u32>(slotPtr(probeSlot)) == 0);
  store<u32>(slotPtr(probeSlot), tagOf(h) | (e + 1));
  count = e + 1;
  return 0;
}

/** Insert or update the key at KEY_PTR: 1 replaced (old value in the state block), 0 inserted, -1 out of memory. */
export function tableSet(segment: u32, offset: u32, size: u32): i32 {
  assert(slotBits != 0, "table used before tableInit");
  const r = setAt(KEY_PTR, segment, offset, size);
  stateSync();
  return r;
}

/** Backward-shift deletion: empties slot i and pulls later members of its run back. */
function slotDelete(hole: u32): void {
  let i = hole;
  let j = hole;
  while (true) {
    j = (j + 1) & mask;
    const s = load<u32>(slotPtr(j));
    if (s == 0) break;
    const home = homeOf(hashOf(entryPtr((s & ENTRY_MASK) - 1)));
    // The slot at j may move back to i only if i lies in [home, j) cyclically.
    if (((j - home) & mask) >= ((j - i) & mask)) {
      store<u32>(slotPtr(i), s);
      i = j;
    }
  }
  store<u32>(slotPtr(i), 0);
}

/** Removes the key at KEY_PTR: 1 when it was there (old value in the state block), else 0. */
export function tableRemove(): i32 {
  assert(slotBits != 0, "table used before tableInit");
  const h = hashOf(KEY_PTR);
  const found = probe(KEY_PTR, h);
  if (found < 0) return 0;
  const e = <u32>found;
  const p = entryPtr(e);
  oldSegment = load<u32>(p, ENTRY_SEGMENT);
  oldOffset = load<u32>(p, ENTRY_OFFSET);
  oldSize = load<u32>(p, ENTRY_SIZE_FIELD);
  slotDelete(probeSlot);
  const last = count - 1;
  if (e != last) {
    // Move the last entry into the hole and re-point its slot.
    const lastPtr = entryPtr(last);
    let i = homeOf(hashOf(lastPtr));
    while (true) {
      const s = load<u32>(slotPtr(i));
      assert(s != 0, "remove: last entry has no slot");
      if ((s & ENTRY_MASK) == last + 1) {
        store<u32>(slotPtr(i), (s & TAG_MASK) | (e + 1));
        break;
      }
      i = (i + 1) & mask;
    }
    memory.copy(p, lastPtr, ENTRY_SIZE);
  }
  count = last;
  stateSync();
  return 1;
}

/** Looks up n keys at BATCH_KEYS_PTR; writes entry or -1 per key as i32 at BATCH_RESULTS_PTR. */
export function tableLookupMany(n: u32): void {
  assert(slotBits != 0, "table used before tableInit");
  assert(<usize>n <= BATCH_MAX);
  for (let i: u32 = 0; i < n; i++) {
    const k = BATCH_KEYS_PTR + (<usize>i << 5);
    store<i32>(BATCH_RESULTS_PTR + (<usize>i << 2), probe(k, hashOf(k)));
  }
}

/**
 * Inserts or updates n keys at BATCH_KEYS_PTR with values (segment, offset,
 * size u32 each) at BATCH_VALUES_PTR. Returns how many were new, or when
 * memory runs out -1 - (how many were applied, a prefix).
 */
export function tableSetMany(n: u32): i32 {
  assert(slotBits != 0, "table used before tableInit");
  assert(<usize>n <= BATCH_MAX);
  let inserted: i32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const v = BATCH_VALUES_PTR + <usize>i * 12;
    const r = setAt(BATCH_KEYS_PTR + (<usize>i << 5), load<u32>(v), load<u32>(v, 4), load<u32>(v, 8));
    if (r < 0) {
      stateSync();
      return -1 - <i32>i;
    }
    if (r == 0) inserted++;
  }
  stateSync();
  return inserted;
}

/**
 * Lays the table out for a checkpoint of n entries and 2^bits slots, which
 * the caller then reads into [TABLE_BASE, +n*ENTRY_SIZE) and [slots, +4<<bits).
 * Returns 0, -1 for counts that cannot be (too many entries for the slots,
 * bits out of range) and -2 when memory runs out.
 */
export function tablePrepareLoad(n: u32, bits: u32): i32 {
  if (bits < SLOT_BITS_MIN || bits > SLOT_BITS_MAX || n > ENTRIES_MAX) return -1;
  if (<u64>n * 5 > (<u64>1 << bits) * 4) return -1;
  // Headroom of 1/16 so the first inserts after open do not move the slots.
  let want = <u64>n + (<u64>n >> 4) + <u64>ENTRIES_MIN;
  if (want > <u64>ENTRIES_MAX) want = <u64>ENTRIES_MAX;
  const slotsAt = (<u64>TABLE_BASE + want * <u64>ENTRY_SIZE + SLOTS_ALIGN - 1) & ~(SLOTS_ALIGN - 1);
  if (!memoryEnsure(slotsAt + (<u64>4 << <u64>bits))) return -2;
  slots = <usize>slotsAt;
  cap = <u32>want;
  count = n;
  slotBitsSet(bits);
  stateSync();
  return 0;
}

/**
 * Checks a loaded table: every slot empty or pointing at a live entry, as
 * many non-empty slots as entries, and a sample of entries (all of them
 * when `all`) found at their own number, which fails if the hash function
 * differs from the writer's. Returns 0 when sound, else 1 (bad slot),
 * 2 (slot count), 3 (an entry not found at its number).
 */
export function tableVerify(all: bool): i32 {
  assert(slotBits != 0, "table used before tableInit");
  let used: u32 = 0;
  for (let i: u32 = 0; i <= mask; i++) {
    const s = load<u32>(slotPtr(i));
    if (s == 0) continue;
    if ((s & ENTRY_MASK) - 1 >= count) return 1;
    used++;
  }
  if (used != count) return 2;
  const stride = all ? 1 : max<u32>(1, count / VERIFY_SAMPLES);
  for (let e: u32 = 0; e < count; e += stride) {
    const p = entryPtr(e);
    if (probe(p, hashOf(p)) != <i32>e) return 3;
  }
  return 0;
}
