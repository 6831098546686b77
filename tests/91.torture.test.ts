/**
 * The kill -9 torture, short: a writer child of this test's runtime (Node
 * under Node, Deno under Deno) runs a random workload on a real store
 * (puts, overwrites, deletes, blobs, rollbacks, commits, compactions,
 * reopens) and is killed with SIGKILL at random moments, TORTURE_KILLS times
 * or for TORTURE_SECONDS, whichever ends first; after each kill a checker
 * child opens the store and the model must hold (tests/_support/
 * torture-run.ts). The long run is `npm run torture -- --seconds N`.
 */
import process from "node:process";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { torture } from "./_support/torture-run.ts";
import { tempDir } from "./_support/tempdir.ts";

/** Kills per runtime in npm test: enough to land in commits, compactions and opens at least once in a while. */
const TORTURE_KILLS = 20;
/** Time bound per runtime, so a loaded machine does not stretch the suite. */
const TORTURE_SECONDS = 15;

const runtime = typeof (globalThis as { Deno?: unknown }).Deno === "undefined" ? "node" : "deno";

test(`kill -9 torture (${runtime}): every acknowledged commit survives whole, nothing unacknowledged shows in part, check is clean`, async () => {
  const dir = tempDir("segstore-torture-");
  const seed = Number(process.env.SEGSTORE_TORTURE_SEED ?? Date.now() % 100_000);
  let kept = false;
  try {
    const r = await torture({ runtime, store: `${dir.path}/store`, seed, kills: TORTURE_KILLS, seconds: TORTURE_SECONDS });
    console.log(
      `  ${runtime}: ${r.kills} kills (${r.killsDuringOpen} during open), ${r.commits} commits acknowledged, ${r.compactions} compactions, ` +
        `${r.reopens} reopens, ${r.inflightLanded} kills inside a commit (${r.inflightLost} of them lost it), seed ${seed}, ${r.ms} ms`,
    );
    if (r.violations.length > 0) {
      kept = true;
      assert.unreachable(`${r.violations[0]}\n  (store kept at ${dir.path}; rerun with SEGSTORE_TORTURE_SEED=${seed})`);
    }
    assert.ok(r.kills >= 3, `kills within ${TORTURE_SECONDS} s: ${r.kills}`);
    assert.ok(r.commits > 0, "some commits were acknowledged");
  } finally {
    if (!kept) dir.cleanup();
  }
});

test.run();
