/**
 * The segstore command line. The same file runs under Node (`npx segstore`,
 * via bin/segstore.js and dist/), Deno (`deno run -A src/cli.ts`, or
 * `deno task segstore`) and as a compiled binary (`deno task compile`).
 *
 * This is the one engine-side file that touches the process: argv, stdio,
 * the environment, signals, child processes and the exit code. It builds a
 * `CliIo` from them and hands it to the commands in src/cli/, which touch
 * nothing else.
 *
 * Map: the commands · top-level help · main (dispatch, errors → exit codes)
 * · the process (CliIo from node:process) · runProcess.
 *
 * Exit codes: 0 ok, 1 error, 2 usage, 3 integrity problem found by check.
 * An error is one line on stderr, `segstore: MESSAGE`, naming the path; the
 * stack only with --debug.
 */
import process from "node:process";
import { spawn } from "node:child_process";
import { runtimeFs } from "../adapters/runtime.ts";
import { LockedError, SegstoreError } from "./format.ts";
import { FsError } from "./fs.ts";
import { benchCommand } from "./cli/bench-command.ts";
import { blobGetCommand, blobPutCommand } from "./cli/blob-commands.ts";
import { checkCommand } from "./cli/check-command.ts";
import {
  type CommandSpec, EXIT_ERROR, EXIT_OK, EXIT_USAGE, helpText, parseCommand, UsageError,
} from "./cli/command.ts";
import { demoCommand } from "./cli/demo.ts";
import { type CliIo, CliFileError } from "./cli/io.ts";
import { deleteCommand, getCommand, listCommand, putCommand } from "./cli/objects.ts";
import { serveCommand } from "./cli/serve-command.ts";
import { compactCommand, infoCommand, initCommand } from "./cli/store-commands.ts";

/** Every command, in the order `segstore --help` lists them. */
export const COMMANDS: readonly CommandSpec[] = [
  initCommand, infoCommand, putCommand, getCommand, deleteCommand, listCommand, blobPutCommand, blobGetCommand,
  checkCommand, compactCommand, serveCommand, demoCommand, benchCommand,
];

/** The package version, printed by --version (kept equal to package.json's by tests/80.cli). */
export const CLI_VERSION = "0.1.0";

function topHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    "segstore: a crash-safe, transactional, log-structured object store (Node.js and Deno)",
    "",
    "usage: segstore COMMAND ARGS... [--help] [--debug]",
    "",
    "commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "segstore COMMAND --help shows a command's arguments, options and an example.",
    "exit codes: 0 ok, 1 error, 2 usage, 3 integrity problem found by check.",
    "",
    "example:",
    "  segstore demo ./demo-store",
    "",
  ].join("\n");
}

/** Finds the command `argv` starts with ("blob put" takes two words); undefined when there is none. */
function findCommand(argv: string[]): { spec: CommandSpec; rest: string[] } | undefined {
  for (const words of [2, 1]) {
    const name = argv.slice(0, words).join(" ");
    const spec = COMMANDS.find((c) => c.name === name);
    if (spec !== undefined) return { spec, rest: argv.slice(words) };
  }
  return undefined;
}

/** One line for an error: its message with newlines folded, so a script reads one line per failure. */
function errorLine(e: unknown): string {
  if (e instanceof LockedError && e.store !== undefined) {
    // The engine's message advises an API option (lockTimeout); a user of the command line needs other words.
    return `store ${e.store} is locked by ${e.holder}: it is open elsewhere (segstore serve, or another command); try again once that is done`;
  }
  if (e instanceof SegstoreError || e instanceof FsError || e instanceof CliFileError || e instanceof UsageError) {
    return e.message.replace(/\s*\n\s*/g, " ");
  }
  const err = e as Error;
  return `internal error: ${String(err?.message ?? err).replace(/\s*\n\s*/g, " ")} (a bug in segstore; --debug shows the stack)`;
}

/** The stack of `e` and of each cause, for --debug. */
function errorStack(e: unknown): string {
  const parts: string[] = [];
  let cur: unknown = e;
  for (let depth = 0; cur !== undefined && depth < 5; depth++) {
    parts.push(cur instanceof Error ? (cur.stack ?? String(cur)) : String(cur));
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return parts.join("\ncaused by: ") + "\n";
}

/** stdout was closed by its reader (`segstore list | head`): end quietly rather than report a broken pipe. */
function isBrokenPipe(e: unknown): boolean {
  return (e as { code?: string })?.code === "EPIPE";
}

/**
 * Runs the command line `argv` (the words after "segstore") against `io`
 * and returns the exit code. Never throws: every error becomes a line on
 * stderr and a code.
 *
 * @example
 * const code = await main(["info", "./store", "--json"], io);
 */
export async function main(argv: string[], io: CliIo): Promise<number> {
  const debug = argv.includes("--debug");
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h" || argv[0] === "help" && argv.length === 1) {
    await io.write(topHelp());
    return argv.length === 0 ? EXIT_USAGE : EXIT_OK;
  }
  if (argv[0] === "--version" || argv[0] === "-V") {
    await io.write(`segstore ${CLI_VERSION} (${io.runtime})\n`);
    return EXIT_OK;
  }
  const words = argv[0] === "help" ? [...argv.slice(1), "--help"] : argv;
  const found = findCommand(words);
  try {
    if (found === undefined) {
      const name = words[0] === "blob" ? `blob ${words[1] ?? ""}`.trim() : words[0]!;
      const near = COMMANDS.filter((c) => c.name.startsWith(name.slice(0, 2))).map((c) => c.name);
      throw new UsageError(`unknown command ${JSON.stringify(name)}${near.length > 0 ? ` (did you mean ${near.join(", ")}?)` : ""}; segstore --help lists them`);
    }
    const args = parseCommand(found.spec, found.rest);
    if (args.values.help) {
      await io.write(helpText(found.spec));
      return EXIT_OK;
    }
    return await found.spec.run(args, io);
  } catch (e) {
    if (isBrokenPipe(e)) return EXIT_ERROR;
    io.error(`segstore: ${errorLine(e)}\n`);
    if (e instanceof UsageError) {
      if (e.usage !== undefined) io.error(`${e.usage}\n`);
      if (found !== undefined) io.error(`(segstore ${found.spec.name} --help for more)\n`);
    }
    if (debug) io.error(errorStack(e));
    return e instanceof UsageError ? EXIT_USAGE : EXIT_ERROR;
  }
}

// ---------------------------------------------------------------------------
// The process

/** The repository root when running from a checkout (src/cli.ts or dist/src/cli.js), else undefined. */
function repoRootOf(moduleUrl: string): string | undefined {
  const url = new URL(moduleUrl);
  if (url.protocol !== "file:") return undefined;
  // .../src (Deno), .../dist/src (tsc's output), .../dist/pkg/src or .../dist/pkg/chunks (the bundle)
  const dir = decodeURIComponent(url.pathname).replace(/\/[^/]*$/, "");
  const root = dir.replace(/\/dist\/pkg\/(src|chunks)$/, "").replace(/\/dist\/src$/, "").replace(/\/src$/, "");
  return root === dir ? undefined : root;
}

/** Writes to a Node-style stream, waiting for 'drain' when its buffer is full. */
function writeTo(stream: NodeJS.WritableStream, data: Uint8Array | string): Promise<void> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const ok = stream.write(data, (err?: Error | null) => {
      if (err && !settled) {
        settled = true;
        reject(err);
      }
    });
    if (ok) {
      settled = true;
      resolve();
    } else {
      stream.once("drain", () => {
        if (!settled) {
          settled = true;
          resolve();
        }
      });
    }
  });
}

/** The CliIo of this process. */
export function processIo(): CliIo {
  const runtime = "Deno" in globalThis ? "deno" : "node";
  // A closed stdout reports EPIPE through the write callback (handled in main); without a listener it would also crash the process.
  process.stdout.on("error", () => {});
  return {
    stdin: process.stdin as unknown as AsyncIterable<Uint8Array>,
    write: (data) => writeTo(process.stdout, data),
    error: (text) => void process.stderr.write(text),
    stdinIsTTY: process.stdin.isTTY === true,
    stdoutIsTTY: process.stdout.isTTY === true,
    stderrIsTTY: process.stderr.isTTY === true,
    columns: process.stderr.columns || 80, // 0 on a pseudo-terminal that was never sized
    env: process.env,
    fs: runtimeFs,
    runtime,
    repoRoot: repoRootOf(import.meta.url),
    // bench.mjs is a Node script: under Deno, the `node` on PATH runs it.
    nodePath: runtime === "node" ? process.execPath : "node",
    runChild(command, args, cwd, onStderrLine) {
      return new Promise((resolve, reject) => {
        const child = spawn(command, args, { cwd, stdio: ["inherit", "inherit", onStderrLine ? "pipe" : "inherit"] });
        if (onStderrLine) {
          let pending = "";
          child.stderr!.setEncoding("utf8");
          child.stderr!.on("data", (text: string) => {
            pending += text;
            const lines = pending.split("\n");
            pending = lines.pop()!;
            for (const line of lines) onStderrLine(line);
          });
          child.stderr!.on("end", () => pending && onStderrLine(pending));
        }
        child.on("error", reject);
        child.on("close", (code, signal) => resolve(code ?? (signal ? 128 + 2 : EXIT_ERROR)));
      });
    },
    untilSignal() {
      return new Promise((resolve) => {
        const on = (name: string) => () => {
          process.off("SIGINT", onInt);
          process.off("SIGTERM", onTerm);
          resolve(name);
        };
        const onInt = on("SIGINT");
        const onTerm = on("SIGTERM");
        process.on("SIGINT", onInt);
        process.on("SIGTERM", onTerm);
      });
    },
  };
}

/**
 * Runs the command line of this process and exits with its code. The entry
 * point of bin/segstore.js, and of this module when Deno runs it directly.
 *
 * @example
 * // bin/segstore.js
 * import { runProcess } from "../dist/src/cli.js";
 * await runProcess();
 */
export async function runProcess(): Promise<never> {
  // Deno.args is Deno's own word for the arguments (a compiled binary's argv[1] is not a script path).
  const denoArgs = (globalThis as { Deno?: { args: string[] } }).Deno?.args;
  const code = await main(denoArgs ?? process.argv.slice(2), processIo());
  // Exit now: stdin may still hold the event loop open. Everything written was handed to the kernel (main awaits its writes).
  process.exit(code);
}

if ((import.meta as { main?: boolean }).main) await runProcess();
