/**
 * `segstore bench`: runs the benchmarks of bench/ (BENCH.md) through
 * `node scripts/bench.mjs`, passing every argument on. Only from a checkout
 * of the repository: the benchmarks and their peers (lmdb, classic-level)
 * are development dependencies, not part of the package or the binary.
 */
import { type CommandSpec, EXIT_ERROR } from "./command.ts";
import { ProgressBar } from "./progress.ts";

/** bench.mjs's progress lines that report a failure, kept on screen when the status line moves on. */
const BENCH_FAILURE_LINE = /^(FAILED|bench:)/;

export const benchCommand: CommandSpec = {
  name: "bench",
  usage: "[WORKLOAD ...] [--quick] [--runs N] [--runtimes node,deno] [--stores a,b] [--write-results] [--list]",
  summary: "Runs the benchmarks side by side with lmdb, classic-level and Deno KV (from a checkout of the repository).",
  details:
    "Every argument goes to scripts/bench.mjs: workloads W1..W9 and core, --quick for a short smoke run.\n" +
    "stdout gets one JSON line per measurement and the ratio table; a status line shows progress on a terminal.",
  options: {},
  positionals: [0, Infinity],
  passThrough: true,
  examples: ["segstore bench W1 W3 --quick", "segstore bench --list"],
  async run(args, io) {
    const script = io.repoRoot === undefined ? undefined : `${io.repoRoot}/scripts/bench.mjs`;
    if (script === undefined || io.fs.stat(script) === undefined) {
      io.error(`segstore bench: scripts/bench.mjs not found${io.repoRoot ? ` in ${io.repoRoot}` : ""}: bench runs from a checkout of the repository (npm run bench)\n`);
      return EXIT_ERROR;
    }
    const passOn = args.raw.filter((a) => a !== "--debug");
    const bar = new ProgressBar(io, "bench");
    const onLine = io.stderrIsTTY
      ? (line: string) => (BENCH_FAILURE_LINE.test(line) || line.startsWith("    |") ? bar.log(line) : bar.status(line))
      : undefined;
    const code = await io.runChild(io.nodePath, [script, ...passOn], io.repoRoot!, onLine);
    bar.done();
    return code;
  },
};
