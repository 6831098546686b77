/**
 * `segstore demo [PATH]`: the README's first command. It shows the whole
 * life of a store in a few seconds: create, write objects and a blob under
 * their content ids, commit, close, reopen, read everything back and
 * compare it with its id, check, and print what happened.
 *
 * The data is deterministic (the same objects and blob every run), so a
 * second run over the same PATH overwrites the same ids and still passes.
 */
import { IntegrityError } from "../format.ts";
import { idHex, type Store } from "../store.ts";
import { type CommandSpec, EXIT_INTEGRITY, EXIT_OK, type ParsedArgs, printJson, stringOption, usageLine, UsageError } from "./command.ts";
import { type CliIo, counted, streamChunks, toReadableStream } from "./io.ts";
import { contentIdOf } from "./objects.ts";
import { formatBytes, ProgressBar } from "./progress.ts";
import { openForCli } from "./store-open.ts";

/** Where the demo puts its store when no PATH is given (the README names it). */
export const DEMO_PATH_DEFAULT = "./demo-store";
/** Objects the demo writes by default: enough to show a batch, few enough to finish in a moment. */
export const DEMO_OBJECTS_DEFAULT = 1000;
/** Bytes of the demo blob: over MAX_OBJECT_SIZE (16 MiB), so it could only be a blob. */
export const DEMO_BLOB_SIZE_DEFAULT = 24 * 1024 * 1024;
/** Most objects --objects accepts: the demo is a demonstration, bench/ measures. */
export const DEMO_OBJECTS_MAX = 1_000_000;
/** Largest --blob-size accepted (1 GiB), for the same reason. */
export const DEMO_BLOB_SIZE_MAX = 1024 * 1024 * 1024;
/** Chunk the demo blob is generated in. */
const DEMO_BLOB_CHUNK = 1024 * 1024;

const enc = new TextEncoder();

/** The n-th demo object: a small JSON document, the same every run. */
function demoObject(n: number): Uint8Array {
  return enc.encode(JSON.stringify({ n, title: `demo object ${n}`, tags: ["segstore", n % 2 ? "odd" : "even"], square: n * n }));
}

/** The demo blob, `size` bytes of xorshift32 noise in chunks, the same every run. */
async function* demoBlob(size: number): AsyncGenerator<Uint8Array> {
  let x = 0x9e3779b9;
  for (let at = 0; at < size; at += DEMO_BLOB_CHUNK) {
    const n = Math.min(DEMO_BLOB_CHUNK, size - at);
    const chunk = new Uint8Array(n);
    const words = new Uint32Array(chunk.buffer, 0, n >>> 2);
    for (let i = 0; i < words.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      words[i] = x >>> 0;
    }
    for (let i = words.length * 4; i < n; i++) chunk[i] = i & 0xff;
    yield chunk;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Milliseconds `body` took, and its result. */
async function timed<T>(body: () => T | Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const result = await body();
  return [result, Math.round(performance.now() - t0)];
}

/** What the demo did, as --json prints it. */
interface DemoReport {
  path: string;
  storeId: string;
  created: boolean;
  objects: number;
  objectBytes: number;
  blobId: string;
  blobBytes: number;
  txid: bigint;
  writeMs: number;
  reopenMs: number;
  readMs: number;
  checkMs: number;
  keysAfterReopen: number;
  mismatches: string[];
  checkOk: boolean;
  checkProblems: string[];
}

/** Writes the objects and the blob, commits. */
async function demoWrite(io: CliIo, store: Store, ids: Uint8Array[], values: Uint8Array[], blobId: Uint8Array, blobSize: number): Promise<bigint> {
  for (let i = 0; i < ids.length; i++) store.put(ids[i]!, values[i]!);
  const bar = new ProgressBar(io, "blob put", blobSize);
  try {
    await store.putBlob(blobId, counted(demoBlob(blobSize), (n) => bar.update(n)));
  } finally {
    bar.done();
  }
  return store.commit();
}

/** Reads every object and the blob back; returns the ids whose bytes do not match. */
async function demoReadBack(io: CliIo, store: Store, ids: Uint8Array[], values: Uint8Array[], blobId: Uint8Array, blobSize: number): Promise<string[]> {
  const mismatches: string[] = [];
  const got = store.getMany(ids);
  for (let i = 0; i < ids.length; i++) {
    const v = got[i];
    if (v === undefined || !sameBytes(v, values[i]!)) mismatches.push(idHex(ids[i]!));
  }
  const stream = store.openBlob(blobId);
  if (stream === undefined) {
    mismatches.push(idHex(blobId));
    return mismatches;
  }
  const bar = new ProgressBar(io, "blob get", blobSize);
  try {
    const readId = await contentIdOf(toReadableStream(counted(streamChunks(stream), (n) => bar.update(n))));
    if (!sameBytes(readId, blobId)) mismatches.push(idHex(blobId));
  } finally {
    bar.done();
  }
  return mismatches;
}

function demoParseCount(args: ParsedArgs, name: string, def: number, max: number, usage: string): number {
  const text = stringOption(args, name);
  if (text === undefined) return def;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > max) throw new UsageError(`demo: --${name} must be a whole number in [0, ${max}], got ${JSON.stringify(text)}`, usage);
  return n;
}

export const demoCommand: CommandSpec = {
  name: "demo",
  usage: `[PATH] [--objects N] [--blob-size BYTES] [--json]`,
  summary: `Creates a store at PATH (default ${DEMO_PATH_DEFAULT}), writes objects and a blob, commits, reopens, reads back, checks, and reports.`,
  details: "Safe to run again on the same PATH: the data is the same every run, under the same content ids.",
  options: {
    objects: { type: "string", value: "N", description: `how many small JSON objects to write (default ${DEMO_OBJECTS_DEFAULT})` },
    "blob-size": { type: "string", value: "BYTES", description: `size of the blob (default ${DEMO_BLOB_SIZE_DEFAULT})` },
    json: { type: "boolean", description: "print the report as JSON" },
  },
  positionals: [0, 1],
  examples: ["segstore demo ./demo-store"],
  async run(args, io) {
    const path = args.positionals[0] ?? DEMO_PATH_DEFAULT;
    const count = demoParseCount(args, "objects", DEMO_OBJECTS_DEFAULT, DEMO_OBJECTS_MAX, usageLine(this));
    const blobSize = demoParseCount(args, "blob-size", DEMO_BLOB_SIZE_DEFAULT, DEMO_BLOB_SIZE_MAX, usageLine(this));
    const values = Array.from({ length: count }, (_, n) => demoObject(n));
    const ids: Uint8Array[] = [];
    for (const v of values) ids.push(await contentIdOf(v));
    const blobId = await contentIdOf(toReadableStream(demoBlob(blobSize)));

    const created = io.fs.stat(path) === undefined || io.fs.readdir(path).length === 0;
    let store = openForCli(io, path, { create: true });
    const storeId = store.config.id;
    let txid: bigint, writeMs: number;
    try {
      [txid, writeMs] = await timed(() => demoWrite(io, store, ids, values, blobId, blobSize));
    } finally {
      store.close();
    }
    let reopenMs: number;
    [store, reopenMs] = await timed(() => openForCli(io, path));
    let report: DemoReport;
    try {
      const keysAfterReopen = store.stats().keys;
      const [mismatches, readMs] = await timed(() => demoReadBack(io, store, ids, values, blobId, blobSize));
      const bar = new ProgressBar(io, "check");
      const [check, checkMs] = await timed(() => store.check({ onProgress: (d: number, t: number) => bar.update(d, t) }));
      bar.done();
      report = {
        path, storeId, created, objects: count, objectBytes: values.reduce((s, v) => s + v.length, 0),
        blobId: idHex(blobId), blobBytes: blobSize, txid, writeMs, reopenMs, readMs, checkMs, keysAfterReopen, mismatches,
        checkOk: check.ok, checkProblems: check.problems.map((p: { message: string }) => p.message),
      };
    } finally {
      store.close();
    }
    if (args.values.json) await printJson(io, report);
    else await io.write(demoFormat(report));
    if (report.mismatches.length > 0) {
      throw new IntegrityError(`demo: ${report.mismatches.length} entries of store ${path} read back wrong: ${report.mismatches.slice(0, 3).join(", ")}`, { store: path });
    }
    return report.checkOk ? EXIT_OK : EXIT_INTEGRITY;
  },
};

function demoFormat(r: DemoReport): string {
  const ms = (n: number) => `${n} ms`;
  const lines = [
    `segstore demo: ${r.created ? "created" : "opened existing"} store ${r.path} (id ${r.storeId.slice(0, 16)}…)`,
    `  wrote   ${r.objects} objects (${formatBytes(r.objectBytes)}) and a ${formatBytes(r.blobBytes)} blob under their BLAKE3 content ids, in ${ms(r.writeMs)}`,
    `  commit  transaction ${r.txid}: on disk (fdatasync'ed, names synced) when commit() returned`,
    `  reopen  ${r.keysAfterReopen} keys back after close and open, in ${ms(r.reopenMs)}`,
    `  read    every object and the blob (streamed), ${r.mismatches.length === 0 ? "all bytes match their ids" : `${r.mismatches.length} MISMATCHED`}, in ${ms(r.readMs)}`,
    `  check   ${r.checkOk ? "ok: every record's CRC, the index and the blob verified" : `${r.checkProblems.length} problems: ${r.checkProblems.slice(0, 3).join("; ")}`}, in ${ms(r.checkMs)}`,
    "",
    "next:",
    `  segstore info ${r.path}`,
    `  segstore list ${r.path}`,
    `  segstore blob get ${r.path} ${r.blobId} > blob.bin`,
  ];
  return lines.join("\n") + "\n";
}
