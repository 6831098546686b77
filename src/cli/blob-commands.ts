/**
 * Blob commands: `blob put` and `blob get`, streamed both ways. Neither
 * holds a blob in memory: stdin goes to the store chunk by chunk as it
 * arrives, and a blob goes to stdout only as fast as the reader takes it.
 *
 * `blob put --content -` needs the content id before it can store, but
 * stdin can be read only once: it is spooled to a `*.tmp` file at the top
 * of the store (which the next open removes, should we crash), hashed, then
 * streamed into the blob. putBlob refuses to move a file the store owns, so
 * this costs a copy; it is the price of a crash never leaving a stray file.
 */
import { IntegrityError, NotFoundError } from "../format.ts";
import { isFsError } from "../fs.ts";
import { joinPath } from "../paths.ts";
import { idHex, type Store } from "../store.ts";
import { type CommandSpec, EXIT_OK, parseIdArg, printJson, stringOption, usageLine, UsageError } from "./command.ts";
import { type CliIo, counted, fileChunks, fileSize, stdinHint, streamChunks, toReadableStream, writeFileAtomic } from "./io.ts";
import { contentIdOf, kindMismatch } from "./objects.ts";
import { ProgressBar } from "./progress.ts";
import { withStore } from "./store-open.ts";

/** The content id of the file at `path`, with a progress bar while it is read. */
async function blobPutHashFile(io: CliIo, path: string): Promise<Uint8Array> {
  const size = fileSize(io.fs, path);
  const bar = new ProgressBar(io, "hash", size);
  try {
    return await contentIdOf(toReadableStream(counted(fileChunks(io.fs, path), (n) => bar.update(n))));
  } finally {
    bar.done();
  }
}

/** Spools stdin into a temp file inside the store; returns its path and size. */
async function blobPutSpoolStdin(io: CliIo, store: Store): Promise<{ path: string; size: number }> {
  const name = `cli-stdin-${crypto.randomUUID()}`;
  const path = store.paths.temp(joinPath(store.path, name));
  const file = io.fs.open(path, "wx+");
  let size = 0;
  const bar = new ProgressBar(io, "read stdin");
  try {
    for await (const chunk of io.stdin) {
      file.write(chunk, size);
      size += chunk.length;
      bar.update(size);
    }
    file.datasync();
  } catch (e) {
    file.close();
    blobPutUnlink(io, path);
    throw e;
  } finally {
    bar.done();
  }
  file.close();
  return { path, size };
}

function blobPutUnlink(io: CliIo, path: string): void {
  try {
    io.fs.unlink(path);
  } catch (e) {
    if (!isFsError(e, "ENOENT")) throw e;
  }
}

export const blobPutCommand: CommandSpec = {
  name: "blob put",
  usage: "PATH ID|--content FILE|-",
  summary: "Stores a blob (any size) under ID and commits, streamed from FILE or from stdin (-).",
  details:
    "ID is 64 hex characters; with --content the blob's BLAKE3 content id is used, and printed.\n" +
    "With no FILE, the blob is read from stdin.",
  options: {
    content: { type: "boolean", description: "use the blob's BLAKE3 content id as its id, and print it" },
    json: { type: "boolean", description: 'print {"id", "bytes", "txid"} as JSON' },
  },
  positionals: [1, 3],
  examples: [
    "segstore blob put ./store --content video.mp4",
    "tar c photos/ | segstore blob put ./store 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 -",
  ],
  async run(args, io) {
    const byContent = args.values.content === true;
    const [path, ...rest] = args.positionals as [string, ...string[]];
    if (byContent ? rest.length > 1 : rest.length < 1 || rest.length > 2) {
      throw new UsageError(
        byContent ? "blob put: with --content give only the source (FILE or -)" : "blob put: give the id (64 hex characters) or --content, then FILE or -",
        usageLine(this),
      );
    }
    const id = byContent ? undefined : parseIdArg(rest[0]!, usageLine(this));
    const source = (byContent ? rest[0] : rest[1]) ?? "-";
    const fromStdin = source === "-";
    const size = fromStdin ? undefined : fileSize(io.fs, source);
    if (fromStdin) stdinHint(io, "the blob");
    const { blobId, bytes, txid } = await withStore(io, path, {}, async (store) => {
      let blobId = id;
      let bytes = 0;
      if (fromStdin && blobId === undefined) {
        const spool = await blobPutSpoolStdin(io, store);
        try {
          blobId = await blobPutHashFile(io, spool.path);
          const bar = new ProgressBar(io, "blob put", spool.size);
          try {
            await store.putBlob(blobId, counted(fileChunks(io.fs, spool.path), (n) => bar.update(n)));
          } finally {
            bar.done();
          }
        } finally {
          blobPutUnlink(io, spool.path);
        }
        bytes = spool.size;
      } else {
        if (blobId === undefined) blobId = await blobPutHashFile(io, source);
        const bar = new ProgressBar(io, "blob put", size);
        const chunks = fromStdin ? io.stdin : fileChunks(io.fs, source);
        try {
          await store.putBlob(blobId, counted(chunks, (n) => bar.update((bytes = n))));
        } finally {
          bar.done();
        }
      }
      return { blobId, bytes, txid: store.commit() };
    });
    if (args.values.json) await printJson(io, { id: idHex(blobId), bytes, txid });
    else if (byContent) await io.write(idHex(blobId) + "\n");
    return EXIT_OK;
  },
};

export const blobGetCommand: CommandSpec = {
  name: "blob get",
  usage: "PATH ID [--out F]",
  summary: "Streams the blob stored under ID to stdout, or to file F.",
  options: {
    out: { type: "string", short: "o", value: "F", description: "write the blob to file F (written whole, then renamed into place)" },
  },
  positionals: [2, 2],
  examples: [
    "segstore blob get ./store 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 | tar x",
    "segstore blob get ./store 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 --out photos.tar",
  ],
  async run(args, io) {
    const [path, idText] = args.positionals as [string, string];
    const id = parseIdArg(idText, usageLine(this));
    const out = stringOption(args, "out");
    await withStore(io, path, { readOnly: true }, async (store) => {
      const record = store.blobRecord(id);
      const stream = record === undefined ? undefined : store.openBlob(id);
      if (stream === undefined) {
        throw new NotFoundError(kindMismatch(store, id, "blob") ?? `blob ${idText} not found in store ${path}`, { store: path });
      }
      const length = Number(record!.length);
      const bar = new ProgressBar(io, "blob get", length);
      let sent = 0;
      try {
        if (out !== undefined) {
          sent = await writeFileAtomic(io.fs, out, streamChunks(stream), (n) => bar.update(n));
        } else {
          for await (const chunk of streamChunks(stream)) {
            await io.write(chunk);
            bar.update((sent += chunk.length));
          }
        }
      } finally {
        bar.done();
      }
      if (sent !== length) {
        throw new IntegrityError(`blob ${idText} in store ${path} ended early: read ${sent} of ${length} bytes (run segstore check ${path})`, { store: path });
      }
    });
    return EXIT_OK;
  },
};
