/**
 * The one place that builds file names inside a store (as LevelDB's
 * filename.h): segments, checkpoints, hints, blobs, temp files, the lock.
 * Paths are joined with "/", which every adapter accepts.
 */

/** Joins path parts with "/", dropping empty parts and doubled separators. */
export function joinPath(...parts: string[]): string {
  const joined = parts.filter((p) => p !== "").join("/");
  return joined.replace(/\/{2,}/g, "/");
}

/** The directory part of a path ("." when there is none). */
export function dirnameOf(path: string): string {
  const trimmed = path.length > 1 ? path.replace(/\/+$/, "") : path;
  const i = trimmed.lastIndexOf("/");
  if (i < 0) return ".";
  if (i === 0) return "/";
  return trimmed.slice(0, i);
}

/** The last part of a path. */
export function basenameOf(path: string): string {
  const trimmed = path.length > 1 ? path.replace(/\/+$/, "") : path;
  return trimmed.slice(trimmed.lastIndexOf("/") + 1);
}

/** Names of the files at the top of a store directory. */
export const STORE_FILES = {
  readme: "README",
  config: "config",
  lock: "lock",
  data: "data",
  blobs: "blobs",
} as const;

/** Suffix of every temporary file; open removes leftovers. */
export const TEMP_SUFFIX = ".tmp";

/** Builds the paths of one store. */
export class StorePaths {
  constructor(readonly root: string, readonly segmentsPerDir: number) {}
  get readme(): string { return joinPath(this.root, STORE_FILES.readme); }
  get config(): string { return joinPath(this.root, STORE_FILES.config); }
  get lock(): string { return joinPath(this.root, STORE_FILES.lock); }
  get data(): string { return joinPath(this.root, STORE_FILES.data); }
  get blobs(): string { return joinPath(this.root, STORE_FILES.blobs); }
  /** data/<n / segments_per_dir> */
  segmentDir(segment: number): string {
    return joinPath(this.data, String(Math.floor(segment / this.segmentsPerDir)));
  }
  /** data/<n / segments_per_dir>/<n> */
  segment(segment: number): string {
    return joinPath(this.segmentDir(segment), String(segment));
  }
  index(segment: number): string { return joinPath(this.root, `index.${segment}`); }
  hints(segment: number): string { return joinPath(this.root, `hints.${segment}`); }
  /** A temp file beside `path`, renamed over it when complete. */
  temp(path: string): string { return path + TEMP_SUFFIX; }
  /** blobs/<xx>: the first two hex digits of the id spread blobs over 256 directories. */
  blobDir(idHex: string): string { return joinPath(this.blobs, idHex.slice(0, 2)); }
  /** blobs/<xx>/<id-hex>.<serial> */
  blob(idHex: string, serial: bigint | number): string { return joinPath(this.blobDir(idHex), `${idHex}.${serial}`); }
  /**
   * blobs/<xx>/<id-hex>.<nonce>.tmp: where a blob is written before its
   * commit renames it to `blob(idHex, serial)`, in the same directory so the
   * rename needs one directory sync. The nonce keeps two uploads of one id apart.
   */
  blobTemp(idHex: string, nonce: string): string { return joinPath(this.blobDir(idHex), `${idHex}.${nonce}${TEMP_SUFFIX}`); }
}

/** What a name inside blobs/<xx>/ is: a blob file, a blob temp file, or something else (undefined). */
export type BlobName = { kind: "blob"; idHex: string; serial: bigint } | { kind: "temp"; idHex: string };

/**
 * Parses a file name inside blobs/<xx>/ as `StorePaths.blob` and
 * `StorePaths.blobTemp` build them; undefined for any other name.
 *
 * @example
 * parseBlobName("ab…(64 hex).7")  // { kind: "blob", idHex: "ab…", serial: 7n }
 */
export function parseBlobName(name: string): BlobName | undefined {
  const m = /^([0-9a-f]{64})\.(?:(\d{1,20})|([0-9a-z]{1,32})\.tmp)$/.exec(name);
  if (m === null) return undefined;
  if (m[2] !== undefined) return { kind: "blob", idHex: m[1], serial: BigInt(m[2]) };
  return { kind: "temp", idHex: m[1] };
}

/** Parses "index.N" / "hints.N" names; undefined for anything else. */
export function parseCheckpointName(name: string, prefix: "index" | "hints"): number | undefined {
  const m = /^(index|hints)\.(\d{1,10})$/.exec(name);
  if (!m || m[1] !== prefix) return undefined;
  return Number(m[2]);
}
