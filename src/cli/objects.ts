/**
 * Commands on plain objects (values up to MAX_OBJECT_SIZE): put, get,
 * delete, list. Each opens the store, does one thing, commits if it wrote,
 * and closes it.
 */
import { MAX_OBJECT_SIZE, NotFoundError } from "../format.ts";
import { idHex, type Store } from "../store.ts";
import {
  type CommandSpec, EXIT_OK, parseIdArg, printJson, stringOption, usageLine, UsageError,
} from "./command.ts";
import { collectLimited, readFileLimited, stdinHint, writeFileAtomic } from "./io.ts";
import { withStore } from "./store-open.ts";

/**
 * The BLAKE3 content id of some bytes, from src/contentid.ts. Imported on
 * first use so commands that never hash do not load the hasher.
 *
 * @example
 * const id = await contentIdOf(new TextEncoder().encode("hello"));
 */
export async function contentIdOf(source: Uint8Array | ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const { contentId } = await import("../contentid.ts");
  return await contentId(source);
}

/** Says which command to use when an id names the other kind of entry. */
export function kindMismatch(store: Store, id: Uint8Array, want: "object" | "blob"): string | undefined {
  const isBlob = store.blobRecord(id) !== undefined;
  if (want === "object" && isBlob) return `id ${idHex(id)} in store ${store.path} is a blob: read it with segstore blob get`;
  if (want === "blob" && !isBlob && store.has(id)) return `id ${idHex(id)} in store ${store.path} is an object, not a blob: read it with segstore get`;
  return undefined;
}

/** Ids `list` writes per call: one write per id would make a long list slow through a pipe. */
export const LIST_LINES_PER_WRITE = 4096;

export const putCommand: CommandSpec = {
  name: "put",
  usage: "PATH ID|- [--file F] [--content]",
  summary: "Stores one object (up to 16 MiB) under ID and commits; the value comes from stdin, or from --file F.",
  details:
    "ID is 64 hex characters. Give - (or --content) instead to store the value under its BLAKE3 content id,\n" +
    "which is printed. Larger values are blobs: segstore blob put.",
  options: {
    file: { type: "string", short: "f", value: "F", description: "read the value from file F instead of stdin" },
    content: { type: "boolean", description: "use the value's BLAKE3 content id as its id, and print it" },
    json: { type: "boolean", description: 'print {"id", "bytes", "txid"} as JSON' },
  },
  positionals: [1, 2],
  examples: [
    "echo hello | segstore put ./store --content",
    "segstore put ./store 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 --file doc.json",
  ],
  async run(args, io) {
    const [path, idText] = args.positionals as [string, string | undefined];
    const byContent = args.values.content === true || idText === "-";
    if (!byContent && idText === undefined) throw new UsageError("put: give the id (64 hex characters), or - / --content to use the content id", usageLine(this));
    if (args.values.content === true && idText !== undefined && idText !== "-") {
      throw new UsageError("put: give either an id or --content, not both", usageLine(this));
    }
    let id = byContent ? undefined : parseIdArg(idText!, usageLine(this));
    const file = stringOption(args, "file");
    if (file === undefined) stdinHint(io, "the value");
    const value = file !== undefined
      ? readFileLimited(io.fs, file, MAX_OBJECT_SIZE, "a value")
      : await collectLimited(io.stdin, MAX_OBJECT_SIZE, "standard input");
    if (id === undefined) id = await contentIdOf(value);
    const txid = await withStore(io, path, {}, (store) => {
      store.put(id!, value);
      return store.commit();
    });
    if (args.values.json) await printJson(io, { id: idHex(id), bytes: value.length, txid });
    else if (byContent) await io.write(idHex(id) + "\n");
    return EXIT_OK;
  },
};

export const getCommand: CommandSpec = {
  name: "get",
  usage: "PATH ID [--out F]",
  summary: "Writes the object stored under ID to stdout, or to file F.",
  options: {
    out: { type: "string", short: "o", value: "F", description: "write the value to file F (written whole, then renamed into place)" },
  },
  positionals: [2, 2],
  examples: ["segstore get ./store 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 > doc.json"],
  async run(args, io) {
    const [path, idText] = args.positionals as [string, string];
    const id = parseIdArg(idText, usageLine(this));
    const value = await withStore(io, path, { readOnly: true }, (store) => {
      const v = store.get(id);
      if (v === undefined) {
        throw new NotFoundError(kindMismatch(store, id, "object") ?? `id ${idText} not found in store ${path}`, { store: path });
      }
      return v; // a fresh copy (store.get's contract), so it outlives close
    });
    const out = stringOption(args, "out");
    if (out !== undefined) {
      await writeFileAtomic(io.fs, out, (async function* () { yield value; })());
    } else {
      await io.write(value);
    }
    return EXIT_OK;
  },
};

export const deleteCommand: CommandSpec = {
  name: "delete",
  usage: "PATH ID",
  summary: "Deletes the object or blob stored under ID and commits. Exit code 1 if there was none.",
  options: {
    json: { type: "boolean", description: 'print {"id", "txid"} as JSON' },
  },
  positionals: [2, 2],
  examples: ["segstore delete ./store 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
  async run(args, io) {
    const [path, idText] = args.positionals as [string, string];
    const id = parseIdArg(idText, usageLine(this));
    const txid = await withStore(io, path, {}, (store) => {
      if (!store.delete(id)) throw new NotFoundError(`id ${idText} not found in store ${path}: nothing deleted`, { store: path });
      return store.commit();
    });
    if (args.values.json) await printJson(io, { id: idHex(id), txid });
    return EXIT_OK;
  },
};

export const listCommand: CommandSpec = {
  name: "list",
  usage: "PATH [--json]",
  summary: "Prints the id of every object and blob, one per line (in no particular order).",
  options: {
    json: { type: "boolean", description: 'print one JSON array of {"id", "blob"}' },
  },
  positionals: [1, 1],
  examples: ["segstore list ./store | wc -l", "segstore list ./store --json"],
  async run(args, io) {
    const [path] = args.positionals as [string];
    const entries = await withStore(io, path, { readOnly: true }, (store) =>
      store.list().map((id) => ({ id: idHex(id), blob: store.blobRecord(id) !== undefined })));
    if (args.values.json) {
      await printJson(io, entries);
      return EXIT_OK;
    }
    for (let i = 0; i < entries.length; i += LIST_LINES_PER_WRITE) {
      await io.write(entries.slice(i, i + LIST_LINES_PER_WRITE).map((e) => e.id + "\n").join(""));
    }
    return EXIT_OK;
  },
};
