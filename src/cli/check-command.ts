/**
 * `segstore check`: verifies every record's CRC, the index against the log,
 * and each blob's length and hash (checkPath of src/check.ts); `--repair` salvages what
 * it can and names, by id, what was lost.
 *
 * Exit codes: 0 when the store is sound (after a repair, when the repair
 * left it sound), 3 when a problem was found and not repaired, 1 when the
 * check itself could not run (missing or locked store).
 */
import type { CheckReport } from "../check.ts";
import { NotFoundError } from "../format.ts";
import { type CommandSpec, EXIT_INTEGRITY, EXIT_OK, printJson } from "./command.ts";
import type { CliIo } from "./io.ts";
import { ProgressBar } from "./progress.ts";

/** Problems listed one per line; past this many, a count of the rest (the JSON report has them all). */
export const CHECK_PROBLEMS_SHOWN_MAX = 50;

async function checkPrint(io: CliIo, path: string, report: CheckReport, repair: boolean): Promise<void> {
  const lines: string[] = [];
  const problems = report.problems;
  for (const p of problems.slice(0, CHECK_PROBLEMS_SHOWN_MAX)) lines.push(`  ${p.kind}: ${p.message}`);
  if (problems.length > CHECK_PROBLEMS_SHOWN_MAX) lines.push(`  ... and ${problems.length - CHECK_PROBLEMS_SHOWN_MAX} more (--json lists all)`);
  const counts = `${report.records} records in ${report.segments} ${report.segments === 1 ? "segment" : "segments"}, ${report.blobs} ${report.blobs === 1 ? "blob" : "blobs"}`;
  if (problems.length === 0) lines.unshift(`store ${path}: ok (${counts} verified)`);
  else if (report.repaired) lines.unshift(`store ${path}: ${problems.length} ${problems.length === 1 ? "problem" : "problems"} found and repaired:`);
  else lines.unshift(`store ${path}: ${problems.length} ${problems.length === 1 ? "problem" : "problems"} found${repair ? " (not repaired)" : ""}:`);
  if (report.lost.length > 0) {
    lines.push(`lost ${report.lost.length} ${report.lost.length === 1 ? "entry" : "entries"} (ids):`);
    for (const id of report.lost) lines.push(`  ${id}`);
  }
  if (!report.ok && !repair) lines.push(`run: segstore check ${path} --repair (salvages what it can; names what is lost)`);
  await io.write(lines.join("\n") + "\n");
}

export const checkCommand: CommandSpec = {
  name: "check",
  usage: "PATH [--repair] [--json]",
  summary: "Verifies every record's CRC, the index against the log, and blob lengths and hashes. Exit code 3 on a problem.",
  details:
    "--repair rebuilds the index from the log, drops corrupt records and blobs, and reports what was lost, by id;\n" +
    "it exits 0 when the store is sound afterwards. Without --repair the store is opened read-only.",
  options: {
    repair: { type: "boolean", description: "salvage: rebuild the index, drop corrupt records, report what was lost" },
    json: { type: "boolean", description: "print the whole report as JSON" },
  },
  positionals: [1, 1],
  examples: ["segstore check ./store", "segstore check ./store --repair"],
  async run(args, io) {
    const [path] = args.positionals as [string];
    const repair = args.values.repair === true;
    if (io.fs.stat(path) === undefined) {
      throw new NotFoundError(`cannot open store ${path}: no such directory (create one with: segstore init ${path})`, { store: path });
    }
    // checkPath opens the store (read-only unless repairing) and, when a damaged segment keeps it from opening,
    // checks (and repairs) it on disk. Imported here: only check needs check.ts.
    const { checkPath } = await import("../check.ts");
    const bar = new ProgressBar(io, repair ? "repair" : "check");
    let report: CheckReport;
    try {
      report = await checkPath(path, { fs: io.fs, repair, onProgress: (done, total) => bar.update(done, total) });
    } finally {
      bar.done();
    }
    if (args.values.json) await printJson(io, report);
    else await checkPrint(io, path, report, repair);
    return report.ok || report.repaired ? EXIT_OK : EXIT_INTEGRITY;
  },
};

