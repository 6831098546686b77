/**
 * What a command may ask of the process, as one object (`CliIo`) that
 * `src/cli.ts` builds from the real process: the commands under `src/cli/`
 * never touch argv, stdio, the environment or the exit code themselves, so
 * the process stays in one file (as the engine's OS stays in `adapters/`).
 *
 * Also here: files named on the command line (`--file`, `--out`, a blob's
 * FILE), read and written through the runtime's `FileSystem` in chunks, and
 * written under a temporary name renamed into place, so a failed transfer
 * never leaves a half file under the name the user asked for.
 *
 * Map: CliIo · reading files · writing files.
 */
import type { FileSystem } from "../fs.ts";
import { isFsError } from "../fs.ts";
import { dirnameOf } from "../paths.ts";

/** The process as commands see it. */
export interface CliIo {
  /** Standard input, in chunks as they arrive; ends at end of input. Read at most once. */
  readonly stdin: AsyncIterable<Uint8Array>;
  /** Writes to standard output; resolves when the bytes were handed on (so a slow reader slows the writer). */
  write(data: Uint8Array | string): Promise<void>;
  /** Writes text to standard error at once (synchronous, so a progress line is drawn while sync work runs). */
  error(text: string): void;
  readonly stdinIsTTY: boolean;
  readonly stdoutIsTTY: boolean;
  /** Progress bars are drawn only where stderr is a terminal. */
  readonly stderrIsTTY: boolean;
  /** Width of the terminal on stderr, or 80. */
  readonly columns: number;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** The runtime's filesystem adapter: every file the CLI touches goes through it. */
  readonly fs: FileSystem;
  /** "node" or "deno". */
  readonly runtime: string;
  /** Where the repository's scripts/ are when the CLI runs from a checkout, else undefined (a compiled binary). */
  readonly repoRoot: string | undefined;
  /**
   * Runs a child process with our stdin and stdout; resolves to its exit
   * code. Its stderr is ours too, unless `onStderrLine` is given: then it
   * gets each line the child writes there.
   */
  runChild(command: string, args: string[], cwd: string, onStderrLine?: (line: string) => void): Promise<number>;
  /** The path of the running Node binary (for `bench`, which is a Node script). */
  readonly nodePath: string;
  /** Resolves with the signal's name at the first SIGINT or SIGTERM. */
  untilSignal(): Promise<string>;
}

/**
 * Says so when a command is about to read stdin from the terminal (the user
 * forgot `< file` or `--file`), so a waiting command does not look hung.
 *
 * @example
 * stdinHint(io, "the value"); // "segstore: reading the value from the terminal; end it with Ctrl-D"
 */
export function stdinHint(io: CliIo, what: string): void {
  if (io.stdinIsTTY && io.stderrIsTTY) io.error(`segstore: reading ${what} from the terminal; end it with Ctrl-D\n`);
}

/** Bytes read from a file per step: big enough to amortise the call, small enough to keep memory flat. */
export const FILE_CHUNK_SIZE = 1024 * 1024;

/**
 * The size of the file at `path`, or a NotFound-style FsError from the adapter.
 *
 * @example
 * fileSize(io.fs, "./big.iso") // 4700000000
 */
export function fileSize(fs: FileSystem, path: string): number {
  const st = fs.stat(path);
  if (st === undefined) throw new CliFileError(`cannot read ${path}: no such file`);
  if (!st.isFile) throw new CliFileError(`cannot read ${path}: it is not a regular file`);
  return st.size;
}

/** A file named on the command line that cannot be used as asked (missing, a directory, too large). */
export class CliFileError extends Error {
  readonly code = "EFILE";
  constructor(message: string) {
    super(message);
    this.name = "CliFileError";
  }
}

/**
 * Reads the file at `path` in chunks of FILE_CHUNK_SIZE. Each chunk is a
 * fresh buffer (a consumer may keep it).
 *
 * @example
 * for await (const chunk of fileChunks(io.fs, "data.bin")) hash.update(chunk);
 */
export async function* fileChunks(fs: FileSystem, path: string): AsyncGenerator<Uint8Array> {
  fileSize(fs, path); // a clear message for a missing file or a directory
  const file = fs.open(path, "r");
  try {
    let position = 0;
    for (;;) {
      const buf = new Uint8Array(FILE_CHUNK_SIZE);
      const n = file.read(buf, position);
      if (n === 0) return;
      position += n;
      yield n === buf.length ? buf : buf.subarray(0, n);
    }
  } finally {
    file.close();
  }
}

/**
 * Reads a whole file of at most `sizeMax` bytes (a value for `put`).
 *
 * @example
 * const value = readFileLimited(io.fs, "doc.json", MAX_OBJECT_SIZE);
 */
export function readFileLimited(fs: FileSystem, path: string, sizeMax: number, what: string): Uint8Array {
  const size = fileSize(fs, path);
  if (size > sizeMax) throw new CliFileError(`cannot use ${path} as ${what}: it has ${size} bytes, over the limit of ${sizeMax}`);
  const file = fs.open(path, "r");
  try {
    const buf = new Uint8Array(size);
    const n = file.read(buf, 0);
    return buf.subarray(0, n);
  } finally {
    file.close();
  }
}

/** Suffix of the file an output is written to before it is renamed over the name asked for. */
export const PARTIAL_SUFFIX = ".partial";

/**
 * Writes `chunks` to `path`: first to `path.partial`, synced, then renamed
 * over `path`, so `path` holds either its old content or all of the new.
 * Returns the bytes written. On failure the partial file is removed.
 *
 * @example
 * await writeFileAtomic(io.fs, "out.bin", store.openBlob(id)!);
 */
export async function writeFileAtomic(
  fs: FileSystem, path: string, chunks: AsyncIterable<Uint8Array>, onChunk?: (bytes: number) => void,
): Promise<number> {
  const st = fs.stat(path);
  if (st !== undefined && st.isDirectory) throw new CliFileError(`cannot write ${path}: it is a directory`);
  const partial = path + PARTIAL_SUFFIX;
  const file = fs.open(partial, "w+");
  let position = 0;
  let done = false;
  try {
    for await (const chunk of chunks) {
      file.write(chunk, position);
      position += chunk.length;
      onChunk?.(position);
    }
    file.sync();
    file.close();
    fs.rename(partial, path);
    fs.syncDir(dirnameOf(path));
    done = true;
    return position;
  } finally {
    if (!done) {
      file.close();
      try {
        fs.unlink(partial);
      } catch (e) {
        if (!isFsError(e, "ENOENT")) throw e;
      }
    }
  }
}

/**
 * Collects an async source into one buffer, refusing more than `sizeMax`
 * bytes (stops reading at the first chunk past it).
 *
 * @example
 * const value = await collectLimited(io.stdin, MAX_OBJECT_SIZE, "standard input");
 */
export async function collectLimited(source: AsyncIterable<Uint8Array>, sizeMax: number, what: string): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of source) {
    total += chunk.length;
    if (total > sizeMax) throw new CliFileError(`${what} has more than ${sizeMax} bytes, the largest value put takes: store it as a blob (segstore blob put)`);
    chunks.push(chunk);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/**
 * Wraps a source so `onBytes(total)` is called after each chunk passes.
 *
 * @example
 * await store.putBlob(id, counted(io.stdin, (n) => bar.update(n)));
 */
export async function* counted(source: AsyncIterable<Uint8Array>, onBytes: (total: number) => void): AsyncGenerator<Uint8Array> {
  let total = 0;
  for await (const chunk of source) {
    total += chunk.length;
    onBytes(total);
    yield chunk;
  }
}

/**
 * Iterates a web ReadableStream (Deno's and Node 20's streams are async
 * iterable, but the DOM typings do not say so everywhere).
 *
 * @example
 * for await (const chunk of streamChunks(store.openBlob(id)!)) await io.write(chunk);
 */
export async function* streamChunks(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  let ended = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        ended = true;
        return;
      }
      yield value;
    }
  } finally {
    // A consumer that stops early (an error writing stdout) cancels the stream, so the blob file is closed.
    if (!ended) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

/**
 * Turns an async source into a web ReadableStream (what contentId() and
 * other stream APIs take), pulling a chunk only when the stream is read.
 *
 * @example
 * const id = await contentId(toReadableStream(fileChunks(io.fs, "big.iso")));
 */
export function toReadableStream(source: AsyncIterable<Uint8Array>): ReadableStream<Uint8Array> {
  const it = source[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await it.next();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    async cancel() {
      await it.return?.();
    },
  });
}
