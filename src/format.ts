/**
 * Format facts and error classes: the one place that says how bytes on disk
 * are laid out and what goes wrong with them. `segments.ts`, `keyindex.ts`,
 * `check.ts` and `blobs.ts` import from here and never restate a size.
 *
 * Map: store layout · record layout and validity · limits · error classes.
 *
 * ## Segment file
 *
 * ```
 * offset 0   "DSEGMENT"                       8-byte magic
 * offset 8   record, record, ...              until end of file
 * ```
 *
 * ## Record (all integers little-endian)
 *
 * ```
 * 0   crc    u32   zlib CRC-32 of bytes [4, size)
 * 4   size   u32   whole record, header included
 * 8   tag    u8    PUT 0 | DELETE 1 | COMMIT 2 | BLOB 3
 * 9   body   size - 9 bytes:
 *       PUT     key[32] value[size - 41]
 *       DELETE  key[32] killed u32       (segment that held the PUT it kills)
 *       COMMIT  txid u64
 *       BLOB    key[32] length u64 blake3[32] serial u64
 * ```
 *
 * A record at offset `o` is valid if and only if: `o + 9 <= file size`;
 * `size` is within `[RECORD_SIZE_MIN[tag], RECORD_SIZE_MAX[tag]]` (checked
 * before anything is read or allocated from it); `o + size <= file size`;
 * the CRC matches; the tag is known. The seed's reader (darc `store.py`)
 * reads PUT, DELETE and COMMIT records written so: it takes the key from the
 * first 32 body bytes and ignores the rest.
 *
 * A segment's committed prefix ends after its last valid COMMIT record.
 * Anything after it (a torn record, zeros, valid records of a transaction
 * that never committed) is an uncommitted tail, cut off at open. A record
 * that fails validation BEFORE the last COMMIT is corruption
 * (`IntegrityError`), never silently skipped.
 */

/** First bytes of every segment file. */
export const SEGMENT_MAGIC = new Uint8Array([0x44, 0x53, 0x45, 0x47, 0x4d, 0x45, 0x4e, 0x54]); // "DSEGMENT"
export const SEGMENT_HEADER_SIZE = 8;

export const TAG_PUT = 0;
export const TAG_DELETE = 1;
export const TAG_COMMIT = 2;
export const TAG_BLOB = 3;
export type RecordTag = typeof TAG_PUT | typeof TAG_DELETE | typeof TAG_COMMIT | typeof TAG_BLOB;

/** Ids (keys) are 32 bytes: already hashes, so a slice of one is a hash. */
export const KEY_SIZE = 32;
/** crc u32 + size u32 + tag u8. */
export const RECORD_HEADER_SIZE = 9;
/** Offset of the key inside a PUT, DELETE or BLOB record. */
export const RECORD_KEY_OFFSET = RECORD_HEADER_SIZE;
/** Header plus key: the size of a PUT of an empty value. */
export const PUT_HEADER_SIZE = RECORD_HEADER_SIZE + KEY_SIZE; // 41
/** Header, key, and the u32 number of the segment holding the PUT the delete kills. */
export const DELETE_RECORD_SIZE = PUT_HEADER_SIZE + 4; // 45
/** Header and the u64 transaction id. */
export const COMMIT_RECORD_SIZE = RECORD_HEADER_SIZE + 8; // 17
/** Length of a BLAKE3-256 digest. */
export const BLOB_HASH_SIZE = 32;
/** Header, key, length u64, BLAKE3-256, serial u64. */
export const BLOB_RECORD_SIZE = PUT_HEADER_SIZE + 8 + BLOB_HASH_SIZE + 8; // 89

/**
 * Largest value `put` takes. Bigger values are blobs (`putBlob`), streamed
 * and never held whole in memory. 16 MiB keeps the largest record a single
 * read into the wasm read window, and under the seed's 20 MiB limit so the
 * seed's reader accepts every record we write.
 */
export const MAX_OBJECT_SIZE = 16 * 1024 * 1024;
/** Largest record of any kind: a PUT of MAX_OBJECT_SIZE bytes. */
export const MAX_RECORD_SIZE = PUT_HEADER_SIZE + MAX_OBJECT_SIZE;

/**
 * The key index stores a record's size in a u32; sizes stay below 2^25, so
 * the top bit marks a BLOB record. `has`, `stats` and `get` then know a key
 * is a blob without reading the segment.
 */
export const INDEX_BLOB_FLAG = 0x80000000;
/** The record size in an index value, without the blob flag. */
export const INDEX_SIZE_MASK = 0x7fffffff;

/** Smallest and largest valid `size` per tag, checked before trusting a header. */
export const RECORD_SIZE_MIN: readonly number[] = [PUT_HEADER_SIZE, DELETE_RECORD_SIZE, COMMIT_RECORD_SIZE, BLOB_RECORD_SIZE];
export const RECORD_SIZE_MAX: readonly number[] = [MAX_RECORD_SIZE, DELETE_RECORD_SIZE, COMMIT_RECORD_SIZE, BLOB_RECORD_SIZE];

/** Store format version written to `config`; a store of another version is refused. */
export const STORE_VERSION = 1;
/** The text of STORE/README. */
export const STORE_README = "This is a segstore store\n";
/** Default segment size before rolling to a new segment (config max_segment_size). */
export const DEFAULT_MAX_SEGMENT_SIZE = 64 * 1024 * 1024;
/** Default segments per data/<n> directory (config segments_per_dir), as the seed. */
export const DEFAULT_SEGMENTS_PER_DIR = 10000;
/** Largest max_segment_size a config may give: offsets are u32 in the index. */
export const MAX_SEGMENT_SIZE_LIMIT = 2 ** 32 - 1 - MAX_RECORD_SIZE;
/** Smallest max_segment_size a config may give; tests use small segments to roll often. */
export const MIN_SEGMENT_SIZE_LIMIT = 1024;

// Relations between the constants, checked once at load.
if (MAX_RECORD_SIZE >= 2 ** 32) throw new Error("format: MAX_RECORD_SIZE must fit a u32 size field");
if (RECORD_SIZE_MIN.length !== 4 || RECORD_SIZE_MAX.length !== 4) throw new Error("format: one size bound per tag");

// ---------------------------------------------------------------------------
// Errors

/** Where an error applies; every field is optional, filled where it is known. */
export interface ErrorPlace {
  /** The store's directory. */
  store?: string;
  /** The file (segment, checkpoint, blob, config). */
  file?: string;
  segment?: number;
  offset?: number;
  cause?: unknown;
}

/**
 * Base of every error segstore raises on purpose. `code` is stable for
 * programs; the message says what failed, why, and the value.
 */
export class SegstoreError extends Error {
  readonly code: string;
  readonly store?: string;
  readonly file?: string;
  readonly segment?: number;
  readonly offset?: number;
  constructor(code: string, message: string, place: ErrorPlace = {}) {
    super(message, place.cause === undefined ? undefined : { cause: place.cause });
    this.name = new.target.name;
    this.code = code;
    if (place.store !== undefined) this.store = place.store;
    if (place.file !== undefined) this.file = place.file;
    if (place.segment !== undefined) this.segment = place.segment;
    if (place.offset !== undefined) this.offset = place.offset;
  }
}

/** Bad CRC, header, size, tag or magic; a checkpoint or blob that does not verify. */
export class IntegrityError extends SegstoreError {
  constructor(message: string, place: ErrorPlace = {}) {
    super("EINTEGRITY", message, place);
  }
}

/** The store's lock is held by another process (or another open in this one). */
export class LockedError extends SegstoreError {
  /** Who holds it, when known (the pid and host written into STORE/lock), else "another process". */
  readonly holder: string;
  constructor(message: string, holder: string, place: ErrorPlace = {}) {
    super("ELOCKED", message, place);
    this.holder = holder;
  }
}

/** A required thing is missing: a store path, a blob file, a key a call needs. */
export class NotFoundError extends SegstoreError {
  constructor(message: string, place: ErrorPlace = {}) {
    super("ENOTFOUND", message, place);
  }
}

/** A transaction's write lost a race: the key changed since the writer read it. */
export class ConflictError extends SegstoreError {
  /** The ids (hex) whose serials did not match. */
  readonly keys: string[];
  constructor(message: string, keys: string[] = [], place: ErrorPlace = {}) {
    super("ECONFLICT", message, place);
    this.keys = keys;
  }
}

/** Not a store, or a store of a version (or config) this build does not read. */
export class StoreFormatError extends SegstoreError {
  constructor(message: string, place: ErrorPlace = {}) {
    super("EFORMAT", message, place);
  }
}

/**
 * The store cannot do this now: it is closed, opened read-only, or failed
 * after an unsure write or sync (reopen it: open recovers to the last commit).
 */
export class StateError extends SegstoreError {
  constructor(code: "ECLOSED" | "EREADONLY" | "EFAILED" | "EBUSY", message: string, place: ErrorPlace = {}) {
    super(code, message, place);
  }
}

/** An operating-system failure while working on the store (ENOSPC, EIO, EMFILE...). `osCode` is the OS's name for it. */
export class StorageError extends SegstoreError {
  readonly osCode: string;
  constructor(osCode: string, message: string, place: ErrorPlace = {}) {
    super("ESTORAGE", message, place);
    this.osCode = osCode;
  }
}

/** Every error class by name, so the wire protocol can rethrow the same class. */
export const ERROR_CLASSES = {
  IntegrityError, LockedError, NotFoundError, ConflictError, StoreFormatError, StateError, StorageError, SegstoreError,
} as const;

/** Internal invariant: a failed assert is a bug in segstore, not bad input. */
export function assert(condition: unknown, message = "assertion failed"): asserts condition {
  if (!condition) throw new Error(`segstore internal assertion: ${message}`);
}
