/**
 * STORE/config: an INI file with one section, [store], as the seed wrote it.
 *
 * ```
 * [store]
 * version = 1
 * segments_per_dir = 10000
 * max_segment_size = 67108864
 * id = <64 hex chars>
 * ```
 *
 * Unknown keys, a missing key, a number out of range or another version are
 * refused with StoreFormatError naming the file: a config we do not fully
 * understand may describe a format we would misread.
 */
import {
  MAX_SEGMENT_SIZE_LIMIT, MIN_SEGMENT_SIZE_LIMIT, STORE_VERSION, StoreFormatError,
} from "./format.ts";

/** What a store's config holds. */
export interface StoreConfig {
  version: number;
  segmentsPerDir: number;
  maxSegmentSize: number;
  /** 64 hex chars, random at create: tells stores apart (the server reports it). */
  id: string;
}

const KEYS = ["version", "segments_per_dir", "max_segment_size", "id"] as const;

/** Renders a config as the INI text written to STORE/config. */
export function formatConfig(config: StoreConfig): string {
  return [
    "[store]",
    `version = ${config.version}`,
    `segments_per_dir = ${config.segmentsPerDir}`,
    `max_segment_size = ${config.maxSegmentSize}`,
    `id = ${config.id}`,
    "",
  ].join("\n");
}

/**
 * Parses STORE/config text; `file` names it in errors.
 *
 * @example
 * parseConfig("[store]\nversion = 1\nsegments_per_dir = 10000\nmax_segment_size = 1048576\nid = " + "ab".repeat(32), "config")
 */
export function parseConfig(text: string, file: string): StoreConfig {
  const fail = (why: string) => new StoreFormatError(`cannot read store config ${file}: ${why}`, { file });
  const values = new Map<string, string>();
  let section: string | undefined;
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = header[1].trim();
      if (section !== "store") throw fail(`unknown section [${section}] on line ${i + 1}`);
      continue;
    }
    const kv = /^([A-Za-z_][A-Za-z0-9_]*)\s*[=:]\s*(.*)$/.exec(line);
    if (!kv || section !== "store") throw fail(`line ${i + 1} is not "key = value" inside [store]: ${JSON.stringify(raw)}`);
    const key = kv[1];
    if (!(KEYS as readonly string[]).includes(key)) throw fail(`unknown key "${key}" on line ${i + 1} (known: ${KEYS.join(", ")})`);
    if (values.has(key)) throw fail(`key "${key}" appears twice`);
    values.set(key, kv[2].trim());
  }
  for (const key of KEYS) if (!values.has(key)) throw fail(`key "${key}" is missing`);
  const int = (key: string, min: number, max: number): number => {
    const v = values.get(key)!;
    if (!/^\d{1,16}$/.test(v) || Number(v) < min || Number(v) > max) throw fail(`${key} = ${v} is not a whole number in [${min}, ${max}]`);
    return Number(v);
  };
  const version = int("version", 0, 2 ** 31);
  if (version !== STORE_VERSION) {
    throw new StoreFormatError(`cannot open store as its version is ${version}: this build reads version ${STORE_VERSION} (${file})`, { file });
  }
  const id = values.get("id")!;
  if (!/^[0-9a-f]{64}$/.test(id)) throw fail(`id must be 64 lowercase hex chars, got ${JSON.stringify(id)}`);
  return {
    version,
    segmentsPerDir: int("segments_per_dir", 1, 2 ** 31),
    maxSegmentSize: int("max_segment_size", MIN_SEGMENT_SIZE_LIMIT, MAX_SEGMENT_SIZE_LIMIT),
    id,
  };
}
