// CRC-32 with zlib's polynomial (reflected 0xEDB88320), the checksum of
// every segment record and checkpoint: slice-by-16, sixteen 1 KiB tables
// (16 KiB, computed once at instantiation), 16 bytes per step.
//
// Table t maps a byte to the CRC of that byte followed by t zero bytes, so
// the 16 bytes of a step are looked up independently and XORed together:
// no dependency between the 16 lookups, only between steps.

import { memoryHas } from "./layout";

const TABLE_COUNT: usize = 16;
/** Sixteen tables of 256 u32, 64-byte aligned so each table starts a cache line. */
const CRC_TABLES: usize = memory.data(16 * 256 * 4, 64);

const POLYNOMIAL: u32 = 0xedb88320;

function crcTablesInit(): void {
  for (let n: u32 = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = (c & 1) ? POLYNOMIAL ^ (c >>> 1) : c >>> 1;
    store<u32>(CRC_TABLES + (<usize>n << 2), c);
  }
  for (let n: u32 = 0; n < 256; n++) {
    let c = load<u32>(CRC_TABLES + (<usize>n << 2));
    for (let t: usize = 1; t < TABLE_COUNT; t++) {
      c = load<u32>(CRC_TABLES + (<usize>(c & 0xff) << 2)) ^ (c >>> 8);
      store<u32>(CRC_TABLES + (t << 10) + (<usize>n << 2), c);
    }
  }
}
crcTablesInit();

// Entry of byte b in table t is at CRC_TABLES + t*1024 + b*4. The table
// offset is written as a constant in each load so it becomes the load's
// immediate offset (binaryen cannot fold a wrapping i32.add into it).
// @ts-ignore: decorator
@inline function step16(c: u32, p: usize): u32 {
  const a = load<u32>(p) ^ c;
  const b = load<u32>(p, 4);
  const d = load<u32>(p, 8);
  const e = load<u32>(p, 12);
  return load<u32>(<usize>(a & 0xff) << 2, CRC_TABLES + 15360) ^
    load<u32>(<usize>((a >>> 8) & 0xff) << 2, CRC_TABLES + 14336) ^
    load<u32>(<usize>((a >>> 16) & 0xff) << 2, CRC_TABLES + 13312) ^
    load<u32>(<usize>(a >>> 24) << 2, CRC_TABLES + 12288) ^
    load<u32>(<usize>(b & 0xff) << 2, CRC_TABLES + 11264) ^
    load<u32>(<usize>((b >>> 8) & 0xff) << 2, CRC_TABLES + 10240) ^
    load<u32>(<usize>((b >>> 16) & 0xff) << 2, CRC_TABLES + 9216) ^
    load<u32>(<usize>(b >>> 24) << 2, CRC_TABLES + 8192) ^
    load<u32>(<usize>(d & 0xff) << 2, CRC_TABLES + 7168) ^
    load<u32>(<usize>((d >>> 8) & 0xff) << 2, CRC_TABLES + 6144) ^
    load<u32>(<usize>((d >>> 16) & 0xff) << 2, CRC_TABLES + 5120) ^
    load<u32>(<usize>(d >>> 24) << 2, CRC_TABLES + 4096) ^
    load<u32>(<usize>(e & 0xff) << 2, CRC_TABLES + 3072) ^
    load<u32>(<usize>((e >>> 8) & 0xff) << 2, CRC_TABLES + 2048) ^
    load<u32>(<usize>((e >>> 16) & 0xff) << 2, CRC_TABLES + 1024) ^
    load<u32>(<usize>(e >>> 24) << 2, CRC_TABLES + 0);
}

/**
 * zlib's crc32(seed, memory[ptr, ptr+len)): `seed` is the CRC of the bytes
 * before (0 to start), so a long run is checksummed in pieces.
 */
export function crc32(ptr: usize, len: usize, seed: u32): u32 {
  assert(memoryHas(ptr, len), "crc32: range outside memory");
  let c = ~seed;
  let p = ptr;
  const end = ptr + len;
  // Two steps per iteration: halves the loop overhead; the steps themselves
  // stay serial (each needs the previous CRC).
  while (end - p >= 32) {
    c = step16(c, p);
    c = step16(c, p + 16);
    p += 32;
  }
  if (end - p >= 16) {
    c = step16(c, p);
    p += 16;
  }
  while (p < end) {
    c = load<u32>(<usize>((c ^ <u32>load<u8>(p)) & 0xff) << 2, CRC_TABLES) ^ (c >>> 8);
    p++;
  }
  return ~c;
}
