/**
 * The shape of a command: its name, usage line, options (parsed by
 * `node:util`'s `parseArgs`, built into Node and Deno), help text with an
 * example, and the function that runs it. Also the exit codes every command
 * returns, and `UsageError` for a command line that does not parse.
 *
 * Map: exit codes · UsageError · CommandSpec · parseCommand · helpText · ids.
 */
import { parseArgs } from "node:util";
import { KEY_SIZE } from "../format.ts";
import type { CliIo } from "./io.ts";

/** Exit codes, as documented in the README's "Command line" section. */
export const EXIT_OK = 0;
/** The command failed: missing or locked store, missing id, I/O error. */
export const EXIT_ERROR = 1;
/** The command line is wrong: unknown command or option, missing argument, malformed id. */
export const EXIT_USAGE = 2;
/** `check` found an integrity problem (or `check --repair` could not fix one). */
export const EXIT_INTEGRITY = 3;

/** A command line that does not parse; printed with the command's usage line, exit code 2. */
export class UsageError extends Error {
  readonly code = "EUSAGE";
  constructor(message: string, readonly usage?: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** One option of a command, as parseArgs takes it plus the words for --help. */
export interface OptionSpec {
  type: "boolean" | "string";
  short?: string;
  /** For string options: what the value is, e.g. "FILE". */
  value?: string;
  description: string;
}

/** The parsed command line of one command. */
export interface ParsedArgs {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
  /** For commands that pass their arguments on (bench): everything after the command name, as given. */
  raw: string[];
}

/** A command: what `segstore NAME --help` prints, and what runs it. */
export interface CommandSpec {
  /** "put", or "blob put" for a subcommand. */
  name: string;
  /** Arguments after the name, e.g. "PATH ID|- [--file F]". */
  usage: string;
  /** One line: what it does. */
  summary: string;
  /** Further paragraphs for --help. */
  details?: string;
  options: Record<string, OptionSpec>;
  /** Fewest and most positional arguments. */
  positionals: [min: number, max: number];
  /** Runnable examples, shown by --help. */
  examples: string[];
  /** Pass unknown options through instead of refusing them (bench). */
  passThrough?: boolean;
  run(args: ParsedArgs, io: CliIo): Promise<number>;
}

/** Options every command takes. */
export const COMMON_OPTIONS: Record<string, OptionSpec> = {
  help: { type: "boolean", short: "h", description: "show this help and exit" },
  debug: { type: "boolean", description: "print the stack of an error, not just its message" },
};

/**
 * Parses `argv` (the words after the command name) for `spec`, refusing
 * unknown options and a wrong number of positionals with UsageError.
 * `--help` returns `{ values: { help: true } }` whatever else is there.
 *
 * @example
 * parseCommand(getSpec, ["./store", "ab12...", "--out", "x.bin"])
 * // { values: { out: "x.bin" }, positionals: ["./store", "ab12..."], raw: [...] }
 */
export function parseCommand(spec: CommandSpec, argv: string[]): ParsedArgs {
  const options: Record<string, { type: "boolean" | "string"; short?: string }> = {};
  for (const [name, o] of Object.entries({ ...COMMON_OPTIONS, ...spec.options })) {
    options[name] = o.short === undefined ? { type: o.type } : { type: o.type, short: o.short };
  }
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: !spec.passThrough });
  } catch (e) {
    // parseArgs explains well ("Unknown option '--x'"); drop its advice about "--", which is rarely what was meant.
    const message = (e as Error).message.replace(/\. To specify a positional argument.*$/s, "");
    throw new UsageError(`${spec.name}: ${message}`, usageLine(spec));
  }
  const values = parsed.values as ParsedArgs["values"];
  if (values.help) return { values, positionals: parsed.positionals, raw: argv };
  if (!spec.passThrough) {
    const [min, max] = spec.positionals;
    const n = parsed.positionals.length;
    if (n < min) throw new UsageError(`${spec.name}: missing argument (got ${n}, want at least ${min})`, usageLine(spec));
    if (n > max) throw new UsageError(`${spec.name}: unexpected argument ${JSON.stringify(parsed.positionals[max])}`, usageLine(spec));
  }
  return { values, positionals: parsed.positionals, raw: argv };
}

/** "usage: segstore put PATH ID|-" */
export function usageLine(spec: CommandSpec): string {
  return `usage: segstore ${spec.name} ${spec.usage}`.trimEnd();
}

/**
 * The text of `segstore NAME --help`: usage, summary, details, options, examples.
 *
 * @example
 * io.write(helpText(spec));
 */
export function helpText(spec: CommandSpec): string {
  const lines = [usageLine(spec), "", spec.summary];
  if (spec.details) lines.push("", spec.details);
  lines.push("", "options:");
  const all = { ...spec.options, ...COMMON_OPTIONS };
  const flags = Object.entries(all).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : "    "}--${name}${o.type === "string" ? ` ${o.value ?? "VALUE"}` : ""}`;
    return [flag, o.description] as const;
  });
  const width = Math.max(...flags.map(([f]) => f.length));
  for (const [flag, description] of flags) lines.push(`  ${flag.padEnd(width)}  ${description}`);
  lines.push("", spec.examples.length > 1 ? "examples:" : "example:");
  for (const example of spec.examples) lines.push(`  ${example}`);
  return lines.join("\n") + "\n";
}

/**
 * Parses an id given on the command line: 64 hex characters (32 bytes),
 * either case. Anything else is a UsageError saying what was wrong.
 *
 * @example
 * parseIdArg("00".repeat(32)) // Uint8Array(32) of zeros
 */
export function parseIdArg(text: string, usage?: string): Uint8Array {
  const hexLength = KEY_SIZE * 2;
  if (text.length !== hexLength || !/^[0-9a-fA-F]+$/.test(text)) {
    const what = text.length !== hexLength ? `${text.length} characters` : "a character that is not a hex digit";
    throw new UsageError(`bad id ${JSON.stringify(text.length > 80 ? text.slice(0, 80) + "…" : text)}: an id is ${hexLength} hex characters (${KEY_SIZE} bytes), this has ${what}`, usage);
  }
  const id = new Uint8Array(KEY_SIZE);
  for (let i = 0; i < KEY_SIZE; i++) id[i] = parseInt(text.slice(i * 2, i * 2 + 2), 16);
  return id;
}

/** A string option's value, or undefined. */
export function stringOption(args: ParsedArgs, name: string): string | undefined {
  const v = args.values[name];
  return typeof v === "string" ? v : undefined;
}

/**
 * Writes `value` as one line of JSON (bigints as numbers when they fit, else strings).
 *
 * @example
 * await printJson(io, { txid: 7n }); // {"txid":7}
 */
export async function printJson(io: CliIo, value: unknown): Promise<void> {
  await io.write(JSON.stringify(value, (_k, v) => typeof v === "bigint" ? (v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : String(v)) : v) + "\n");
}
