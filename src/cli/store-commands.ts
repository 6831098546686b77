/**
 * Commands on a store as a whole: init, info, compact.
 */
import { DEFAULT_MAX_SEGMENT_SIZE, MAX_SEGMENT_SIZE_LIMIT, MIN_SEGMENT_SIZE_LIMIT, StoreFormatError } from "../format.ts";
import { joinPath, STORE_FILES } from "../paths.ts";
import { type CommandSpec, EXIT_OK, printJson, stringOption, usageLine, UsageError } from "./command.ts";
import { formatBytes, ProgressBar } from "./progress.ts";
import { openForCli, withStore } from "./store-open.ts";

export const initCommand: CommandSpec = {
  name: "init",
  usage: "PATH [--max-segment-size BYTES]",
  summary: "Creates an empty store in directory PATH (made if missing; it must be empty if it exists).",
  options: {
    "max-segment-size": {
      type: "string", value: "BYTES",
      description: `roll to a new segment file past this size (default ${DEFAULT_MAX_SEGMENT_SIZE})`,
    },
    json: { type: "boolean", description: 'print {"path", "id"} as JSON' },
  },
  positionals: [1, 1],
  examples: ["segstore init ./store"],
  async run(args, io) {
    const [path] = args.positionals as [string];
    const sizeText = stringOption(args, "max-segment-size");
    let maxSegmentSize: number | undefined;
    if (sizeText !== undefined) {
      maxSegmentSize = Number(sizeText);
      if (!Number.isInteger(maxSegmentSize) || maxSegmentSize < MIN_SEGMENT_SIZE_LIMIT || maxSegmentSize > MAX_SEGMENT_SIZE_LIMIT) {
        throw new UsageError(`init: --max-segment-size must be a whole number of bytes in [${MIN_SEGMENT_SIZE_LIMIT}, ${MAX_SEGMENT_SIZE_LIMIT}], got ${JSON.stringify(sizeText)}`, usageLine(this));
      }
    }
    // open({ create }) opens an existing store as lmdb does; init is asked for a new one, so an existing store is an error.
    if (io.fs.stat(joinPath(path, STORE_FILES.config)) !== undefined) {
      throw new StoreFormatError(`cannot init ${path}: it is a store already (segstore info ${path} describes it)`, { store: path });
    }
    const store = openForCli(io, path, maxSegmentSize === undefined ? { create: true } : { create: true, maxSegmentSize });
    const id = store.config.id;
    store.close();
    if (args.values.json) await printJson(io, { path, id });
    else await io.write(`created store ${path} (id ${id})\n`);
    return EXIT_OK;
  },
};

export const infoCommand: CommandSpec = {
  name: "info",
  usage: "PATH [--json]",
  summary: "Describes a store: id, format version, segments, keys, blobs, live and total bytes, last transaction.",
  options: {
    json: { type: "boolean", description: "print every figure of store.stats() as JSON" },
  },
  positionals: [1, 1],
  examples: ["segstore info ./store", "segstore info ./store --json"],
  async run(args, io) {
    const [path] = args.positionals as [string];
    const { stats, version } = await withStore(io, path, { readOnly: true }, (store) => ({
      stats: store.stats(), version: store.config.version,
    }));
    if (args.values.json) {
      await printJson(io, { ...stats, version });
      return EXIT_OK;
    }
    const share = stats.totalBytes > 0 ? ` (${Math.round((100 * stats.liveBytes) / stats.totalBytes)}% live)` : "";
    const rows: [string, string][] = [
      ["store", path],
      ["id", stats.id],
      ["version", String(version)],
      ["segments", String(stats.segments)],
      ["keys", `${stats.keys} (${stats.blobs} ${stats.blobs === 1 ? "blob" : "blobs"})`],
      ["bytes", `${formatBytes(stats.liveBytes)} live of ${formatBytes(stats.totalBytes)} in segments${share}`],
      ["last transaction", String(stats.lastTxid)],
    ];
    await io.write(rows.map(([k, v]) => `${k.padEnd(17)}${v}\n`).join(""));
    return EXIT_OK;
  },
};

export const compactCommand: CommandSpec = {
  name: "compact",
  usage: "PATH [--json]",
  summary: "Rewrites the live records of sparse segments and deletes the old segments, freeing space.",
  options: {
    json: { type: "boolean", description: 'print {"segmentsCompacted", "bytesCopied", "bytesFreed"} as JSON' },
  },
  positionals: [1, 1],
  examples: ["segstore compact ./store"],
  async run(args, io) {
    const [path] = args.positionals as [string];
    const result = await withStore(io, path, {}, (store) => {
      // Compaction is synchronous; the bar is drawn (synchronously) after each committed step.
      const bar = new ProgressBar(io, "compact");
      bar.update(0);
      const r = store.compact({ onProgress: (done, total) => bar.update(done, total) });
      bar.done();
      return r;
    });
    if (args.values.json) await printJson(io, result);
    else {
      await io.write(
        `compacted ${result.segmentsCompacted} ${result.segmentsCompacted === 1 ? "segment" : "segments"}: ` +
          `copied ${formatBytes(result.bytesCopied)}, freed ${formatBytes(result.bytesFreed)}\n`,
      );
    }
    return EXIT_OK;
  },
};
