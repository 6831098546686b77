/**
 * The adapter of the runtime we run in, picked once at load: Deno gets
 * `adapters/deno.ts`, Node gets `adapters/node.ts`. The other adapter is
 * never imported, so Deno never loads Node's native flock addon and Node
 * never sees `Deno.*`.
 *
 * @example
 * import { runtimeFs } from "./adapters/runtime.ts";
 * runtimeFs.mkdir("/tmp/store"); // node or deno, whichever runs this
 */
import type { FileSystem } from "../src/fs.ts";

async function runtimeFsLoad(): Promise<FileSystem> {
  // Deno first: Deno also defines `process` for Node compatibility.
  if ("Deno" in globalThis) return (await import("./deno.ts")).denoFs;
  const nodeVersion = (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node;
  if (typeof nodeVersion === "string") return (await import("./node.ts")).nodeFs;
  throw new Error(
    "segstore: unsupported runtime: found neither Deno nor Node.js (process.versions.node). " +
      "Pass a FileSystem adapter explicitly: open(path, { fs }).",
  );
}

/** The FileSystem of the current runtime ("node" or "deno"). */
export const runtimeFs: FileSystem = await runtimeFsLoad();
