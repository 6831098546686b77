/**
 * STORE/hints.N: what the store knows about its segments at checkpoint N,
 * so open needs no scan: per segment the live PUT/BLOB count and bytes, the
 * bytes of DELETE records and the file size, plus the log position and
 * transaction id it is valid through (the same as index.N's header: a
 * pair that disagrees is not used).
 *
 * msgpack map: { version: 1, segment, offset, txid (u64), segments:
 * [[segment, liveCount, liveBytes, deleteBytes, size], ...], compact: [segment, ...] }
 */
import { decode, encode } from "@msgpack/msgpack";
import { IntegrityError } from "./format.ts";

/** Hints format version; another is ignored (the log is replayed). */
export const HINTS_VERSION = 1;
/** Largest hints file we read: 40 bytes a segment for far more segments than a store has. */
export const HINTS_SIZE_MAX = 64 * 1024 * 1024;

/** What the store tracks per segment. */
export interface SegmentStat {
  /** Live PUT and BLOB records (those the index points at). */
  count: number;
  /** Their bytes, headers included. */
  bytes: number;
  /** Bytes of DELETE records in the segment (kept until what they kill is gone). */
  deleteBytes: number;
  /** The file's size. */
  size: number;
}

export interface Hints {
  segment: number;
  offset: number;
  txid: bigint;
  segments: Map<number, SegmentStat>;
  compact: number[];
}

/** Serialises hints for hints.N. */
export function encodeHints(h: Hints): Uint8Array {
  const segments: number[][] = [];
  for (const [n, s] of h.segments) segments.push([n, s.count, s.bytes, s.deleteBytes, s.size]);
  return encode(
    { version: HINTS_VERSION, segment: h.segment, offset: h.offset, txid: h.txid, segments, compact: h.compact },
    { useBigInt64: true },
  );
}

/** Parses hints.N; anything malformed is an IntegrityError naming `file`. */
export function decodeHints(bytes: Uint8Array, file: string): Hints {
  const bad = (why: string) => new IntegrityError(`hints file ${file} is unusable: ${why}`, { file });
  if (bytes.length > HINTS_SIZE_MAX) throw bad(`${bytes.length} bytes is over the ${HINTS_SIZE_MAX} limit`);
  let raw: unknown;
  try {
    // msgpack-js allocates an array for its claimed length before reading
    // an element; an array of N elements takes at least N bytes, so no
    // claim larger than the file is believed (5 bytes cannot cost 128 MiB).
    raw = decode(bytes, {
      useBigInt64: true,
      maxStrLength: 64, maxBinLength: 0, maxArrayLength: bytes.length, maxMapLength: 16, maxExtLength: 0,
    });
  } catch (e) {
    throw bad(`not msgpack (${(e as Error).message})`);
  }
  if (typeof raw !== "object" || raw === null) throw bad("not a map");
  const o = raw as Record<string, unknown>;
  if (o.version !== HINTS_VERSION) throw bad(`version ${String(o.version)}, this build reads ${HINTS_VERSION}`);
  const u32 = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0 && v < 2 ** 32;
  const num = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
  if (!u32(o.segment) || !u32(o.offset)) throw bad("position is not two u32");
  const txid = typeof o.txid === "bigint" ? o.txid : num(o.txid) ? BigInt(o.txid) : undefined;
  if (txid === undefined || txid < 0n) throw bad("txid is not a u64");
  if (!Array.isArray(o.segments) || !Array.isArray(o.compact)) throw bad("segments or compact is not an array");
  const segments = new Map<number, SegmentStat>();
  for (const row of o.segments) {
    if (!Array.isArray(row) || row.length !== 5 || !row.every(num) || !u32(row[0])) throw bad("a segment row is not 5 counts");
    segments.set(row[0], { count: row[1], bytes: row[2], deleteBytes: row[3], size: row[4] });
  }
  if (!o.compact.every(u32)) throw bad("compact holds a non-segment");
  return { segment: o.segment, offset: o.offset, txid, segments, compact: o.compact as number[] };
}
